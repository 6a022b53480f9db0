// The cluster's PKI, made with the openssl CLI (node:crypto makes keys but not
// X.509 certificates): one CA signs the API server's serving certificate and
// every client certificate; RBAC reads users from CN and groups from O, as
// kubeadm sets them up. EC P-256 keys: fast to make, accepted everywhere.
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { run } from './proc.ts';
import { apiserverUrl, net, state } from './paths.ts';

export type ClientIdentity = { name: string; cn: string; groups?: readonly string[] };

const caCert = () => join(state.pki, 'ca.crt');
const caKey = () => join(state.pki, 'ca.key');
const ecKey = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes'];

export const pkiFile = {
  ca: caCert,
  cert: (name: string) => join(state.pki, `${name}.crt`),
  key: (name: string) => join(state.pki, `${name}.key`),
  saKey: () => join(state.pki, 'sa.key'),
  saPub: () => join(state.pki, 'sa.pub'),
} as const;

function ensureCa(): void {
  mkdirSync(state.pki, { recursive: true, mode: 0o700 });
  if (existsSync(caCert()) && existsSync(caKey())) return;
  run('openssl', [
    'req',
    '-x509',
    ...ecKey,
    '-keyout',
    caKey(),
    '-out',
    caCert(),
    '-days',
    '3650',
    '-subj',
    '/CN=tandem-e2e-ca',
  ]);
}

function issue(name: string, subject: string, extensions: string[]): void {
  if (existsSync(pkiFile.cert(name)) && existsSync(pkiFile.key(name))) return;
  const csr = join(state.pki, `${name}.csr`);
  const ext = join(state.pki, `${name}.ext`);
  writeFileSync(
    ext,
    [
      'basicConstraints=critical,CA:FALSE',
      'keyUsage=critical,digitalSignature,keyEncipherment',
      ...extensions,
      '',
    ].join('\n'),
  );
  run('openssl', ['req', '-new', ...ecKey, '-keyout', pkiFile.key(name), '-out', csr, '-subj', subject]);
  run('openssl', [
    'x509',
    '-req',
    '-in',
    csr,
    '-CA',
    caCert(),
    '-CAkey',
    caKey(),
    '-CAcreateserial',
    '-days',
    '365',
    '-extfile',
    ext,
    '-out',
    pkiFile.cert(name),
  ]);
}

export function ensureServerPki(): void {
  ensureCa();
  const sans = [
    `IP:${net.hostIp}`,
    'IP:127.0.0.1',
    `IP:${net.serviceIp}`,
    'DNS:localhost',
    'DNS:kubernetes',
    'DNS:kubernetes.default',
    'DNS:kubernetes.default.svc',
    'DNS:kubernetes.default.svc.cluster.local',
  ];
  issue('apiserver', '/CN=kube-apiserver', ['extendedKeyUsage=serverAuth', `subjectAltName=${sans.join(',')}`]);
  if (!existsSync(pkiFile.saKey())) {
    run('openssl', ['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', pkiFile.saKey()]);
    run('openssl', ['pkey', '-in', pkiFile.saKey(), '-pubout', '-out', pkiFile.saPub()]);
  }
}

/** A client certificate and a kubeconfig that uses it (file references, absolute paths). */
export function ensureClient(id: ClientIdentity, kubeconfigPath: string): void {
  ensureCa();
  const subject = [...(id.groups ?? []).map((g) => `/O=${g}`), `/CN=${id.cn}`].join('');
  issue(id.name, subject, ['extendedKeyUsage=clientAuth']);
  writeFileSync(
    kubeconfigPath,
    `apiVersion: v1
kind: Config
clusters:
- name: tandem-e2e
  cluster:
    server: ${apiserverUrl}
    certificate-authority: ${caCert()}
users:
- name: ${id.name}
  user:
    client-certificate: ${pkiFile.cert(id.name)}
    client-key: ${pkiFile.key(id.name)}
contexts:
- name: tandem-e2e
  context:
    cluster: tandem-e2e
    user: ${id.name}
current-context: tandem-e2e
`,
    { mode: 0o600 },
  );
}
