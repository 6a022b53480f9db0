// Certificates for the peer link's TLS (net { tls yes; tls-ca …; tls-cert …; tls-key …; }):
// one CA, and per node a key and a certificate that names the node (subject CN and DNS
// subjectAltName), usable as TLS server and client (each node is both). `tandemadm
// tls-certs DIR NODE…` calls this; the controller can later issue the same files per node.
//
// Why the openssl CLI and not an npm X.509 library: issuing certificates is a rare admin
// step, far from the data path; openssl is on every host and in the image, admins know it
// and can inspect or replace what it made (cert-manager's files work the same); and the
// maintained JS option (@peculiar/x509) pulls a dozen packages, a DI container and a
// global reflect-metadata polyfill into the engine's process for this one step.
// Each CA's name carries 4 random bytes, so two CAs are told apart in error messages.
// Keys: ECDSA P-256. Validity: `days` (default 825, the longest browsers allow; rotate by
// re-running with a new DIR and restarting the engines).
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { access, mkdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

/** Node names become a CN and a DNS name: letters, digits, '.', '-', '_' only (no injection into -subj). */
const NODE_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/;

export class CertError extends Error {
  readonly code = 'TANDEM_ERR_CERT';
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = 'CertError';
  }
}

async function openssl(args: string[]): Promise<void> {
  try {
    await run('openssl', args, { timeout: 60_000 });
  } catch (err) {
    const e = err as { stderr?: string; message: string };
    throw new CertError(`openssl ${args[0]} failed: ${(e.stderr ?? e.message).trim()}`, { cause: err });
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
  const days = String(opts.days ?? 825);
  const p = certPaths(dir);
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const oldUmask = process.umask(0o077);
  try {
    if (!(await exists(p.ca)) || !(await exists(p.caKey))) {
      await openssl(['ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-out', p.caKey]);
      await openssl([
        'req',
        '-new',
        '-x509',
        '-key',
        p.caKey,
        '-out',
        p.ca,
        '-days',
        days,
        '-subj',
        `/CN=tandem peer CA ${randomBytes(4).toString('hex')}`,
        '-addext',
        'basicConstraints=critical,CA:TRUE,pathlen:0',
        '-addext',
        'keyUsage=critical,keyCertSign,cRLSign',
      ]);
    }
    for (const node of nodes) {
      const csr = join(dir, `${node}.csr`);
      const ext = join(dir, `${node}.ext`);
      await openssl(['ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-out', p.key(node)]);
      await openssl(['req', '-new', '-key', p.key(node), '-out', csr, '-subj', `/CN=${node}`]);
      await writeFile(
        ext,
        [
          'basicConstraints=critical,CA:FALSE',
          'keyUsage=critical,digitalSignature',
          'extendedKeyUsage=serverAuth,clientAuth',
          `subjectAltName=DNS:${node}`,
          '',
        ].join('\n'),
      );
      await openssl([
        'x509',
        '-req',
        '-in',
        csr,
        '-CA',
        p.ca,
        '-CAkey',
        p.caKey,
        '-CAcreateserial',
        '-out',
        p.cert(node),
        '-days',
        days,
        '-extfile',
        ext,
      ]);
      await rm(csr, { force: true });
      await rm(ext, { force: true });
    }
  } finally {
    process.umask(oldUmask);
  }
  return p;
}
