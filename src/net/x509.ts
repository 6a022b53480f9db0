// X.509 certificates for the peer link's TLS, made with node:crypto alone: no openssl
// binary in the image, no npm X.509 library in the engine. Node can make keys and sign,
// and parse certificates (X509Certificate), but not issue them; issuing is a small DER
// encoding of RFC 5280's TBSCertificate, signed ECDSA P-256 / SHA-256:
//
//   Certificate  ::= SEQUENCE { tbsCertificate, signatureAlgorithm, signatureValue BIT STRING }
//   TBSCertificate ::= SEQUENCE { [0] version v3, serialNumber, signature, issuer, validity,
//                                 subject, subjectPublicKeyInfo, [3] extensions }
//
// The CA: basicConstraints critical CA:TRUE pathlen 0; keyUsage critical keyCertSign,
// cRLSign. A node: basicConstraints critical CA:FALSE; keyUsage critical
// digitalSignature; extendedKeyUsage serverAuth, clientAuth (each node is both);
// subject CN and subjectAltName DNS = the node's name (what peer-link.ts checks).
import { createPrivateKey, generateKeyPairSync, type KeyObject, randomBytes, sign, X509Certificate } from 'node:crypto';

// --- DER encoding (X.690) ---------------------------------------------------------------

function tlv(tag: number, ...parts: Buffer[]): Buffer {
  const body = Buffer.concat(parts);
  const n = body.length;
  const len =
    n < 0x80
      ? [n]
      : n < 0x100
        ? [0x81, n]
        : n < 0x10000
          ? [0x82, n >> 8, n & 0xff]
          : [0x83, n >> 16, (n >> 8) & 0xff, n & 0xff];
  return Buffer.concat([Buffer.from([tag, ...len]), body]);
}
const seq = (...p: Buffer[]) => tlv(0x30, ...p);
const set = (...p: Buffer[]) => tlv(0x31, ...p);
/** A non-negative INTEGER from big-endian bytes: minimal, with a 0 byte when the top bit is set. */
function integer(b: Buffer): Buffer {
  let i = 0;
  while (i < b.length - 1 && b[i] === 0) i++;
  const v = b.subarray(i);
  return tlv(0x02, (v[0] ?? 0) & 0x80 ? Buffer.concat([Buffer.from([0]), v]) : v);
}
function oid(dotted: string): Buffer {
  const arcs = dotted.split('.').map(Number);
  const out = [40 * arcs[0]! + arcs[1]!];
  for (const a of arcs.slice(2)) {
    const b = [a & 0x7f];
    for (let v = a >>> 7; v > 0; v >>>= 7) b.unshift((v & 0x7f) | 0x80);
    out.push(...b);
  }
  return tlv(0x06, Buffer.from(out));
}
const utf8 = (s: string) => tlv(0x0c, Buffer.from(s, 'utf8'));
const bool = (v: boolean) => tlv(0x01, Buffer.from([v ? 0xff : 0]));
const octets = (b: Buffer) => tlv(0x04, b);
/** BIT STRING of whole bytes, `unused` low bits of the last byte unused. */
const bits = (b: Buffer, unused = 0) => tlv(0x03, Buffer.from([unused]), b);
/** RFC 5280 4.1.2.5: UTCTime through 2049, GeneralizedTime from 2050. */
function time(d: Date): Buffer {
  const iso = d.toISOString().replace(/[-:T]/g, '').slice(0, 14); // YYYYMMDDHHMMSS
  return d.getUTCFullYear() < 2050 ? tlv(0x17, Buffer.from(`${iso.slice(2)}Z`)) : tlv(0x18, Buffer.from(`${iso}Z`));
}

const OID = {
  commonName: '2.5.4.3',
  ecdsaWithSha256: '1.2.840.10045.4.3.2',
  basicConstraints: '2.5.29.19',
  keyUsage: '2.5.29.15',
  extKeyUsage: '2.5.29.37',
  subjectAltName: '2.5.29.17',
  serverAuth: '1.3.6.1.5.5.7.3.1',
  clientAuth: '1.3.6.1.5.5.7.3.2',
} as const;

const name = (cn: string) => seq(set(seq(oid(OID.commonName), utf8(cn))));
const extension = (id: string, critical: boolean, value: Buffer) =>
  seq(oid(id), ...(critical ? [bool(true)] : []), octets(value));

// --- DER reading: just enough to take a CA certificate's subject as it is encoded -----

function readTlv(der: Buffer, at: number): { start: number; body: number; end: number } {
  const first = der[at + 1];
  if (first === undefined) throw new Error('truncated DER');
  let len = first;
  let body = at + 2;
  if (first & 0x80) {
    const n = first & 0x7f;
    len = 0;
    for (let i = 0; i < n; i++) len = len * 256 + (der[body + i] ?? 0);
    body += n;
  }
  if (body + len > der.length) throw new Error('truncated DER');
  return { start: at, body, end: body + len };
}

/** The subject Name of a DER certificate, byte for byte (a leaf's issuer must equal it). */
function subjectDer(cert: Buffer): Buffer {
  const tbs = readTlv(cert, readTlv(cert, 0).body);
  let at = tbs.body;
  if (cert[at] === 0xa0) at = readTlv(cert, at).end; // [0] version
  for (let i = 0; i < 4; i++) at = readTlv(cert, at).end; // serial, signature, issuer, validity
  const subject = readTlv(cert, at);
  return cert.subarray(subject.start, subject.end);
}

// --- Issuing --------------------------------------------------------------------------

export type Issued = { certPem: string; keyPem: string };

const pem = (label: string, der: Buffer) =>
  `-----BEGIN ${label}-----\n${(der.toString('base64').match(/.{1,64}/g) ?? []).join('\n')}\n-----END ${label}-----\n`;

/** A positive 16-byte serial (RFC 5280: at most 20 octets, unique per CA: random). */
function serial(): Buffer {
  const b = randomBytes(16);
  b[0] = (b[0]! & 0x7f) | 0x01;
  return b;
}

function certificate(o: {
  issuer: Buffer;
  subject: Buffer;
  publicKey: KeyObject;
  signer: KeyObject;
  days: number;
  now: Date;
  extensions: Buffer[];
}): Buffer {
  // Five minutes back: a peer whose clock is a little behind still accepts a fresh certificate.
  const notBefore = new Date(o.now.getTime() - 5 * 60_000);
  const notAfter = new Date(o.now.getTime() + o.days * 86_400_000);
  const algorithm = seq(oid(OID.ecdsaWithSha256));
  const tbs = seq(
    tlv(0xa0, integer(Buffer.from([2]))), // v3
    integer(serial()),
    algorithm,
    o.issuer,
    seq(time(notBefore), time(notAfter)),
    o.subject,
    o.publicKey.export({ type: 'spki', format: 'der' }),
    tlv(0xa3, seq(...o.extensions)),
  );
  return seq(tbs, algorithm, bits(sign('sha256', tbs, o.signer)));
}

const keyPair = () => generateKeyPairSync('ec', { namedCurve: 'prime256v1' });

/** A new CA: ECDSA P-256 key and a self-signed certificate named `commonName`. */
export function issueCa(commonName: string, o: { days?: number; now?: Date } = {}): Issued {
  const { publicKey, privateKey } = keyPair();
  const n = name(commonName);
  const der = certificate({
    issuer: n,
    subject: n,
    publicKey,
    signer: privateKey,
    days: o.days ?? 3650,
    now: o.now ?? new Date(),
    extensions: [
      extension(OID.basicConstraints, true, seq(bool(true), integer(Buffer.from([0])))),
      // keyCertSign (bit 5) and cRLSign (bit 6): 0b00000110, one unused bit.
      extension(OID.keyUsage, true, bits(Buffer.from([0x06]), 1)),
    ],
  });
  return { certPem: pem('CERTIFICATE', der), keyPem: privateKey.export({ type: 'pkcs8', format: 'pem' }) as string };
}

/** Node names become a CN and a DNS name: letters, digits, '.', '-', '_' only. */
export const CERT_NODE_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,252}$/;

/** A node's key and certificate, signed by the CA (its PEM certificate and key). */
export function issueNodeCert(ca: Issued, node: string, o: { days?: number; now?: Date } = {}): Issued {
  if (!CERT_NODE_NAME.test(node)) throw new Error(`not a node name: ${JSON.stringify(node)}`);
  const caCert = new X509Certificate(ca.certPem);
  if (!caCert.ca) throw new Error('the CA certificate is not a CA (basicConstraints CA:FALSE)');
  const { publicKey, privateKey } = keyPair();
  const der = certificate({
    issuer: subjectDer(caCert.raw),
    subject: name(node),
    publicKey,
    signer: createPrivateKey(ca.keyPem),
    days: o.days ?? 825,
    now: o.now ?? new Date(),
    extensions: [
      extension(OID.basicConstraints, true, seq()),
      // digitalSignature (bit 0): 0b10000000, seven unused bits.
      extension(OID.keyUsage, true, bits(Buffer.from([0x80]), 7)),
      extension(OID.extKeyUsage, false, seq(oid(OID.serverAuth), oid(OID.clientAuth))),
      extension(OID.subjectAltName, false, seq(tlv(0x82, Buffer.from(node, 'ascii')))),
    ],
  });
  return { certPem: pem('CERTIFICATE', der), keyPem: privateKey.export({ type: 'pkcs8', format: 'pem' }) as string };
}
