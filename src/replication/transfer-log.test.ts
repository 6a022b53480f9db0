import { describe, expect, test } from '@jest/globals';
import { TransferLog } from './transfer-log.ts';

const req = (seq: number, length = 4096): [number, number, number] => [seq, seq * 4096, length];

describe('transfer log', () => {
  test('writes join the open epoch; closing an empty epoch sends no barrier', () => {
    const tl = new TransferLog(7);
    expect(tl.close()).toBeUndefined();
    tl.add(...req(1), 10);
    tl.add(...req(2, 8192), 11);
    expect(tl.openEpoch).toEqual({ number: 7, writes: 2, bytes: 12288, openedAt: 10 });
    expect(tl.close()).toBe(7);
    expect(tl.openEpoch.number).toBe(8);
    expect(tl.newestClosed).toBe(7);
    expect(tl.size).toBe(2);
  });

  test('a write stays until its epoch is acknowledged, not when the write itself is', () => {
    const tl = new TransferLog();
    tl.add(...req(1), 0);
    tl.close();
    tl.add(...req(2), 0);
    expect(tl.get(1)?.epoch).toBe(1);
    const a = tl.ack(1, 1);
    expect(a.ok && a.requests.map((r) => r.seq)).toEqual([1]);
    expect(tl.get(1)).toBeUndefined();
    expect(tl.get(2)?.epoch).toBe(2); // still held: its epoch is open
    expect(tl.size).toBe(1);
  });

  test('acks out of order or with the wrong count mean a broken stream', () => {
    const tl = new TransferLog();
    tl.add(...req(1), 0);
    tl.close();
    tl.add(...req(2), 0);
    tl.add(...req(3), 0);
    tl.close();
    expect(tl.ack(2, 2)).toEqual({ ok: false, problem: 'BARRIER_ACK for epoch 2, expected 1' });
    expect(tl.ack(1, 3)).toEqual({ ok: false, problem: 'BARRIER_ACK for epoch 1 counts 3 writes, it had 1' });
    expect(tl.ack(1, 1).ok).toBe(true);
    expect(tl.ack(2, 2).ok).toBe(true);
    expect(tl.ack(3, 0)).toEqual({ ok: false, problem: 'BARRIER_ACK for epoch 3, expected none' });
  });

  test('a lost connection hands back every unacknowledged write, closed or open, oldest first', () => {
    const tl = new TransferLog();
    tl.add(...req(1), 0);
    tl.close();
    tl.add(...req(2), 0);
    tl.close();
    tl.ack(1, 1);
    tl.add(...req(3), 0);
    expect(tl.drain().map((r) => r.seq)).toEqual([2, 3]);
    expect(tl.size).toBe(0);
    expect(tl.closedEpochs).toBe(0);
    expect(tl.openEpoch.writes).toBe(0);
    // Epoch numbers go on: a late BARRIER_ACK from the old connection cannot match.
    expect(tl.openEpoch.number).toBe(4);
  });

  test('epoch numbers wrap at 2^32', () => {
    const tl = new TransferLog(0xffffffff);
    tl.add(...req(1), 0);
    expect(tl.close()).toBe(0xffffffff);
    expect(tl.openEpoch.number).toBe(0);
  });

  test('a request answers each acknowledgement point once: the first outcome counts, late waiters get it too', async () => {
    const tl = new TransferLog();
    const r = tl.add(...req(1), 0);
    const written = r.when('written');
    const durable = r.when('durable');
    expect(r.isSettled('written')).toBe(false);
    r.settle('written', true);
    r.settle('written', false);
    expect(r.isSettled('written')).toBe(true);
    await expect(written).resolves.toBe(true);
    await expect(r.when('written')).resolves.toBe(true);
    r.settle('durable', false);
    await expect(durable).resolves.toBe(false);
    await expect(r.when('durable')).resolves.toBe(false);
    expect(r.isSettled('sent')).toBe(false);
  });
});
