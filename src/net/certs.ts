// Certificates for the peer link's TLS (net { tls yes; tls-ca …; tls-cert …; tls-key …; }):
// one CA, and per node a key and a certificate that names the node (subject CN and DNS
// subjectAltName), usable as TLS server and client (each node is both). `tandemadm
// tls-certs DIR NODE…` calls this; the controller issues the same per node as Secrets.
//
// Issued by our own code on node:crypto (x509.ts): no openssl binary is needed on the
// host or in the image. The files are the usual PEM (a PKCS#8 key, an X.509 v3
// certificate), so admins can inspect them with openssl and replace them with files of
// their own CA (cert-manager's work the same way).
// Each CA's name carries 4 random bytes, so two CAs are told apart in error messages.
// Keys: ECDSA P-256. Validity: `days` (default 825, the longest browsers allow; rotate by
// re-running with a new DIR and restarting the engines).
import { randomBytes } from 'node:crypto';
import { access, mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { issueCa, issueNodeCert } from './x509.ts';

/** Node names become a CN and a DNS name: letters, digits, '.', '-', '_' only (nothing to inject). */
const NODE_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/;

export class CertError extends Error {
  readonly code = 'TANDEM_ERR_CERT';
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = 'CertError';
  }
}

const exists = (p: string): Promise<boolean> =>
  access(p).then(
    () => true,
    () => false,
  );

export interface CertPaths {
  ca: string;
  caKey: string;
  cert: (node: string) => string;
  key: (node: string) => string;
}

export function certPaths(dir: string): CertPaths {
  return {
    ca: join(dir, 'ca.crt'),
    caKey: join(dir, 'ca.key'),
    cert: (node) => join(dir, `${node}.crt`),
    key: (node) => join(dir, `${node}.key`),
  };
}

/**
 * Makes DIR/ca.crt + ca.key unless they exist (then nodes are added to that CA), and
 * DIR/NODE.crt + NODE.key for each node (replaced if present). Keys are mode 0600.
 */
export async function makeCerts(dir: string, nodes: string[], opts: { days?: number } = {}): Promise<CertPaths> {
  const bad = nodes.filter((n) => !NODE_NAME.test(n));
  if (bad.length > 0)
    throw new CertError(`not a node name: ${bad.map((n) => JSON.stringify(n)).join(', ')} (letters, digits, . - _)`);
  if (nodes.length === 0) throw new CertError('name at least one node');
  const days = opts.days ?? 825;
  const p = certPaths(dir);
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const write = (path: string, text: string, mode: number) => writeFile(path, text, { mode });
  try {
    let ca: { certPem: string; keyPem: string };
    if (!(await exists(p.ca)) || !(await exists(p.caKey))) {
      ca = issueCa(`tandem peer CA ${randomBytes(4).toString('hex')}`, { days });
      await write(p.caKey, ca.keyPem, 0o600);
      await write(p.ca, ca.certPem, 0o644);
    } else {
      ca = { certPem: await readFile(p.ca, 'utf8'), keyPem: await readFile(p.caKey, 'utf8') };
    }
    for (const node of nodes) {
      const n = issueNodeCert(ca, node, { days });
      await write(p.key(node), n.keyPem, 0o600);
      await write(p.cert(node), n.certPem, 0o644);
    }
  } catch (err) {
    if (err instanceof CertError) throw err;
    throw new CertError(`issuing certificates in ${dir} failed: ${(err as Error).message}`, { cause: err });
  }
  return p;
}
