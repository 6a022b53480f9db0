import { FrameParser, P, type Frame } from './wire.ts';
import { GENERIC_REFUSAL, Handshake, type HandshakeOptions, type HandshakeStep } from './handshake.ts';

const nonce = (b: number): Buffer => Buffer.alloc(32, b);

function side(role: 'dialer' | 'listener', over: Partial<HandshakeOptions> = {}): Handshake {
  const dialer = role === 'dialer';
  return new Handshake({
    role,
    resource: 'mysql',
    nodeName: dialer ? 'master' : 'backup',
    peerName: dialer ? 'backup' : 'master',
    auth: { alg: 'sha256', secret: 's3cret' },
    nonce: nonce(dialer ? 1 : 2),
    ...over,
  });
}

function frames(bufs: Buffer[]): Frame[] {
  const r = new FrameParser().feed(Buffer.concat(bufs));
  expect(r.error).toBeUndefined();
  return r.frames;
}

/** Runs both sides against each other; returns the final step of each and every frame the listener sent. */
function run(d: Handshake, l: Handshake): { d?: HandshakeStep; l?: HandshakeStep; fromListener: Frame[] } {
  const fromListener: Frame[] = [];
  let toL = frames(d.start());
  let toD = frames(l.start());
  let dEnd: HandshakeStep | undefined;
  let lEnd: HandshakeStep | undefined;
  for (let i = 0; i < 10 && (toL.length > 0 || toD.length > 0); i++) {
    const nextD: Frame[] = [];
    const nextL: Frame[] = [];
    for (const f of toL) {
      if (lEnd) break;
      const s = l.onFrame(f);
      if (s.kind !== 'fail') nextD.push(...frames(s.frames));
      if (s.kind !== 'send') lEnd = s;
    }
    for (const f of toD) {
      if (dEnd) break;
      const s = d.onFrame(f);
      if (s.kind !== 'fail') nextL.push(...frames(s.frames));
      if (s.kind !== 'send') dEnd = s;
    }
    fromListener.push(...nextD);
    toL = nextL;
    toD = nextD;
  }
  return { d: dEnd, l: lEnd, fromListener };
}

function text(fs: Frame[]): string {
  return fs.map((f) => f.payload.toString('latin1')).join('|');
}

describe('peer handshake', () => {
  test.each([
    ['with a shared secret', {}],
    ['without a shared secret', { auth: undefined }],
  ])('both sides complete %s', (_name, over) => {
    const r = run(side('dialer', over), side('listener', over));
    expect(r.d).toMatchObject({ kind: 'done', version: 3 });
    expect(r.l).toMatchObject({ kind: 'done', version: 3 });
  });

  test('the listener says nothing until it is spoken to, and nothing naming anyone before proof', () => {
    const l = side('listener');
    expect(l.start()).toEqual([]);
    // A client that sends a CHALLENGE gets a random challenge back, and nothing else.
    const step = l.onFrame({ type: P.CHALLENGE, flags: 0, payload: Buffer.concat([nonce(9), Buffer.from('sha256')]) });
    expect(step.kind).toBe('send');
    const out = text(frames((step as { frames: Buffer[] }).frames));
    for (const word of ['mysql', 'master', 'backup']) expect(out).not.toContain(word);
    // Its guessed proof is refused with a message that names nothing.
    const refused = l.onFrame({ type: P.AUTH, flags: 0, payload: Buffer.alloc(32, 7) });
    expect(refused).toMatchObject({ kind: 'fail', reason: 'Authentication of peer failed', proven: false });
    expect(JSON.stringify(refused)).not.toMatch(/mysql|master|backup/);
  });

  test('a wrong secret is refused on the listener before it proves anything back', () => {
    const r = run(side('dialer', { auth: { alg: 'sha256', secret: 'wrong' } }), side('listener'));
    expect(r.l).toMatchObject({ kind: 'fail', reason: 'Authentication of peer failed', tell: 'authentication failed' });
    expect(r.fromListener.map((f) => f.type)).toEqual([P.CHALLENGE]);
    expect(text(r.fromListener)).not.toMatch(/mysql|master|backup/);
  });

  test('a proof made for another resource or node pair does not pass', () => {
    for (const over of [{ resource: 'other' }, { nodeName: 'intruder' }] as Partial<HandshakeOptions>[]) {
      const r = run(side('dialer', over), side('listener'));
      expect(r.l).toMatchObject({ kind: 'fail', reason: 'Authentication of peer failed' });
    }
  });

  test('a reflected proof (the listener’s own answer sent back) is refused', () => {
    const d = side('dialer');
    const l = side('listener');
    const [challenge] = frames(d.start());
    const lChallenge = frames((l.onFrame(challenge!) as { frames: Buffer[] }).frames);
    const dProof = frames((d.onFrame(lChallenge[0]!) as { frames: Buffer[] }).frames);
    const lProof = frames((l.onFrame(dProof[0]!) as { frames: Buffer[] }).frames);
    // A second listener with the same nonces gets the listener's proof back as the dialer's.
    const l2 = side('listener');
    l2.onFrame(challenge!);
    expect(l2.onFrame(lProof[0]!)).toMatchObject({ kind: 'fail', reason: 'Authentication of peer failed' });
  });

  test('without a secret, a HELLO for another resource gets a refusal that names nothing', () => {
    const r = run(side('dialer', { auth: undefined, resource: 'other' }), side('listener', { auth: undefined }));
    expect(r.l).toMatchObject({
      kind: 'fail',
      reason: "peer is for resource 'other', not 'mysql'",
      tell: GENERIC_REFUSAL,
    });
    expect(r.fromListener).toEqual([]);
    const d = side('dialer', { auth: undefined });
    const told = r.l?.kind === 'fail' ? r.l.tell : undefined;
    const error = { type: P.ERROR, flags: 0, payload: Buffer.from(JSON.stringify({ message: told })) } as const;
    expect(d.onFrame(error)).toMatchObject({
      kind: 'fail',
      reason: `peer refused us: ${GENERIC_REFUSAL}`,
    });
  });

  test('a secret on one side only, or different algorithms, is a clear refusal', () => {
    expect(run(side('dialer', { auth: undefined }), side('listener')).l).toMatchObject({
      reason: 'peer has no shared-secret but we require authentication',
    });
    expect(run(side('dialer'), side('listener', { auth: undefined })).l).toMatchObject({
      reason: 'peer requires authentication but we have no shared-secret',
    });
    expect(run(side('dialer', { auth: { alg: 'sha1', secret: 's3cret' } }), side('listener')).l).toMatchObject({
      reason: 'cram-hmac-alg differs: peer sha1, ours sha256',
    });
  });

  test('garbage instead of a handshake frame is refused', () => {
    expect(side('listener').onFrame({ type: P.DATA, flags: 0, payload: Buffer.alloc(16) })).toMatchObject({
      kind: 'fail',
      reason: 'expected CHALLENGE, got packet type 0x10',
      tell: GENERIC_REFUSAL,
    });
  });
});
