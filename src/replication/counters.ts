// The /proc/drbd 8.4 counters. Byte counters are kept in bytes and shown in KiB.
export interface Counters {
  /** network send: bytes sent to the peer (mirrored writes and resync data) */
  ns: number;
  /** network receive */
  nr: number;
  /** disk write: bytes written to the local disk */
  dw: number;
  /** disk read */
  dr: number;
  /** activity log updates (metadata transactions) */
  al: number;
  /** bitmap page writes */
  bm: number;
  /** local I/O requests in flight */
  lo: number;
  /** requests sent to the peer and not yet answered */
  pe: number;
  /** requests received from the peer and not yet answered */
  ua: number;
  /** application requests not yet completed */
  ap: number;
  /** write epochs (barriers) */
  ep: number;
}

export function zeroCounters(): Counters {
  return { ns: 0, nr: 0, dw: 0, dr: 0, al: 0, bm: 0, lo: 0, pe: 0, ua: 0, ap: 0, ep: 1 };
}
