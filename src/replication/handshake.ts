// The peer link's handshake, as a pure state machine: frames in, frames out, and
// an outcome. It never touches a socket (peer-link.ts drives it), so every rule
// below is unit-tested without a network (handshake.test.ts).
//
// Who speaks first matters: anyone who can reach the listening port can open a
// connection, so the listener says nothing that names the resource or the nodes
// until the dialer has proven itself (issue 15). The dialer knows whom it called.
//
// With `shared-secret` (DRBD's cram-hmac-alg):
//   D → L  CHALLENGE  nonce_d (32 random bytes) | hmac algorithm name
//   L → D  CHALLENGE  nonce_l | algorithm             (random: says nothing)
//   D → L  AUTH       mac("dialer",   resource, D, L, nonce_l, nonce_d)
//   L → D  AUTH       mac("listener", resource, L, D, nonce_d, nonce_l)  only if D's was right
//   D → L  HELLO      JSON: names, protocol versions                       only if L's was right
//   L → D  HELLO
// Without a secret there is nothing to prove; the dialer's HELLO goes first and the
// listener answers only a HELLO that names exactly this resource and both nodes.
// Under TLS (tls.ts) the same exchange runs inside the encrypted, mutually
// authenticated channel.
//
// Both nonces and the role are inside every MAC: an answer cannot be replayed from an
// earlier connection or reflected back at its sender. A refusal sent to an
// unauthenticated peer is generic; the detail is only logged locally.
import { createHmac, timingSafeEqual } from 'node:crypto';
import { z } from 'zod';
import { P, PROTOCOL_VERSION_MAX, PROTOCOL_VERSION_MIN, encodeFrame, encodeJson, type Frame } from './wire.ts';

export const NONCE_BYTES = 32;

const Hello = z.object({
  proto: z.literal('tandem'),
  protoMin: z.number().int(),
  protoMax: z.number().int(),
  resource: z.string(),
  node: z.string(),
  peer: z.string(),
});
type Hello = z.infer<typeof Hello>;

export interface HandshakeOptions {
  role: 'dialer' | 'listener';
  resource: string;
  nodeName: string;
  peerName: string;
  /** cram-hmac-alg + shared-secret, or none. */
  auth: { alg: string; secret: string } | undefined;
  /** 32 random bytes (injected: tests and the simulator choose them). */
  nonce: Buffer;
}

export type HandshakeStep =
  /** Frames to send; the handshake goes on. */
  | { kind: 'send'; frames: Buffer[] }
  /** Done: send `frames` (may be empty), then the connection belongs to the engine. */
  | { kind: 'done'; frames: Buffer[]; version: number }
  /**
   * Refused. `reason` is for our log; `tell` is what the peer may hear (undefined: close
   * silently). Before the peer proved itself, `tell` names nothing.
   */
  | { kind: 'fail'; reason: string; tell: string | undefined; proven: boolean };

type Phase = 'challenge' | 'auth' | 'hello' | 'done';

/** Said to a peer that has not proven itself: nothing about who we are or what we expected. */
export const GENERIC_REFUSAL = 'handshake refused';

export class Handshake {
  readonly #o: HandshakeOptions;
  #phase: Phase;
  #peerNonce: Buffer | undefined;
  /** The peer proved it knows the secret (or there is none to prove). */
  #proven: boolean;

  constructor(o: HandshakeOptions) {
    if (o.nonce.length !== NONCE_BYTES) throw new RangeError(`nonce must be ${NONCE_BYTES} bytes`);
    this.#o = o;
    this.#phase = o.auth ? 'challenge' : 'hello';
    this.#proven = false;
  }

  /** Whether the peer has proven itself (a listener without a secret: once its HELLO named us). */
  get proven(): boolean {
    return this.#proven;
  }

  /** What this side sends as soon as the transport is up: the dialer speaks first, the listener waits. */
  start(): Buffer[] {
    if (this.#o.role === 'listener') return [];
    return this.#o.auth ? this.challenge() : this.hello();
  }

  onFrame(f: Frame): HandshakeStep {
    const o = this.#o;
    if (this.#phase === 'done') return this.fail('frame after the handshake', false);
    if (f.type === P.ERROR)
      return {
        kind: 'fail',
        reason: `peer refused us: ${safeMessage(f.payload)}`,
        tell: undefined,
        proven: this.#proven,
      };
    switch (this.#phase) {
      case 'challenge': {
        if (f.type === P.HELLO) return this.fail('peer has no shared-secret but we require authentication', true);
        if (f.type !== P.CHALLENGE)
          return this.fail(`expected CHALLENGE, got packet type 0x${f.type.toString(16)}`, true);
        if (f.payload.length < NONCE_BYTES) return this.fail('malformed CHALLENGE', true);
        const alg = f.payload.subarray(NONCE_BYTES).toString('latin1');
        if (alg !== o.auth!.alg) return this.fail(`cram-hmac-alg differs: peer ${alg}, ours ${o.auth!.alg}`, true);
        this.#peerNonce = Buffer.from(f.payload.subarray(0, NONCE_BYTES));
        this.#phase = 'auth';
        // The dialer proves itself first; the listener answers a challenge with its own.
        return { kind: 'send', frames: o.role === 'dialer' ? this.proof() : this.challenge() };
      }
      case 'auth': {
        if (f.type !== P.AUTH) return this.fail(`expected AUTH, got packet type 0x${f.type.toString(16)}`, true);
        const peerRole = o.role === 'dialer' ? 'listener' : 'dialer';
        const expected = mac(o.auth!, peerRole, o.resource, o.peerName, o.nodeName, o.nonce, this.#peerNonce!);
        if (f.payload.length !== expected.length || !timingSafeEqual(f.payload, expected))
          return this.fail('Authentication of peer failed', true, 'authentication failed');
        this.#proven = true;
        this.#phase = 'hello';
        // Now, and only now, each side names itself: the dialer with its HELLO, the
        // listener with its proof (its HELLO follows the dialer's).
        return { kind: 'send', frames: o.role === 'dialer' ? this.hello() : this.proof() };
      }
      case 'hello': {
        if (f.type === P.CHALLENGE) return this.fail('peer requires authentication but we have no shared-secret', true);
        if (f.type !== P.HELLO) return this.fail(`expected HELLO, got packet type 0x${f.type.toString(16)}`, true);
        const parsed = Hello.safeParse(safeJson(f.payload));
        if (!parsed.success) return this.fail('malformed HELLO', true);
        const h = parsed.data;
        if (h.resource !== o.resource)
          return this.fail(`peer is for resource '${h.resource}', not '${o.resource}'`, true);
        if (h.node !== o.peerName || h.peer !== o.nodeName)
          return this.fail(
            `peer introduced itself as '${h.node}' (expecting '${o.peerName}'), wanting '${h.peer}' (we are '${o.nodeName}')`,
            true,
          );
        this.#proven = true;
        const version = Math.min(h.protoMax, PROTOCOL_VERSION_MAX);
        if (version < Math.max(h.protoMin, PROTOCOL_VERSION_MIN))
          return this.fail(
            `no common protocol version (peer ${h.protoMin}-${h.protoMax}, ours ${PROTOCOL_VERSION_MIN}-${PROTOCOL_VERSION_MAX})`,
            true,
          );
        this.#phase = 'done';
        return { kind: 'done', frames: o.role === 'listener' ? this.hello() : [], version };
      }
    }
  }

  private challenge(): Buffer[] {
    return encodeFrame(P.CHALLENGE, Buffer.concat([this.#o.nonce, Buffer.from(this.#o.auth!.alg, 'latin1')]));
  }

  private proof(): Buffer[] {
    const o = this.#o;
    return encodeFrame(P.AUTH, mac(o.auth!, o.role, o.resource, o.nodeName, o.peerName, this.#peerNonce!, o.nonce));
  }

  private hello(): Buffer[] {
    const o = this.#o;
    const h: Hello = {
      proto: 'tandem',
      protoMin: PROTOCOL_VERSION_MIN,
      protoMax: PROTOCOL_VERSION_MAX,
      resource: o.resource,
      node: o.nodeName,
      peer: o.peerName,
    };
    return encodeJson(P.HELLO, h);
  }

  /** `detail` goes to our log; the peer hears it only once it proved itself, else `generic`. */
  private fail(detail: string, tellPeer: boolean, generic = GENERIC_REFUSAL): HandshakeStep {
    this.#phase = 'done';
    return {
      kind: 'fail',
      reason: detail,
      tell: !tellPeer ? undefined : this.#proven || this.#o.role === 'dialer' ? detail : generic,
      proven: this.#proven,
    };
  }
}

/** HMAC(secret, tag | role | resource | from | to | challenge | own nonce). */
function mac(
  auth: { alg: string; secret: string },
  role: string,
  resource: string,
  from: string,
  to: string,
  challenge: Buffer,
  own: Buffer,
): Buffer {
  return createHmac(auth.alg, auth.secret)
    .update(JSON.stringify(['tandem-auth-v2', role, resource, from, to]))
    .update(challenge)
    .update(own)
    .digest();
}

function safeJson(b: Buffer): unknown {
  try {
    return JSON.parse(b.toString('utf8'));
  } catch {
    return undefined;
  }
}

function safeMessage(b: Buffer): string {
  const j = safeJson(b) as { message?: unknown } | undefined;
  return typeof j?.message === 'string' ? j.message.slice(0, 200) : 'unknown reason';
}
