// A minimal Kubernetes REST client over node:https with client certificates:
// what the harness needs (get/create/patch a handful of
// objects, /readyz), with no dependency to load inside every node namespace.
import { readFileSync } from 'node:fs';
import { Agent, request } from 'node:https';

export type Credentials = { server: string; ca: string; cert: string; key: string };

export type KubeResponse = { status: number; body: unknown; text: string };

export class KubeHttp {
  readonly #server: URL;
  readonly #agent: Agent;

  constructor(creds: Credentials) {
    this.#server = new URL(creds.server);
    this.#agent = new Agent({
      ca: readFileSync(creds.ca),
      cert: readFileSync(creds.cert),
      key: readFileSync(creds.key),
      keepAlive: true,
      maxSockets: 4,
    });
  }

  /** One request with a hard timeout; network errors reject, HTTP errors resolve with their status. */
  request(
    method: string,
    path: string,
    opts: { body?: unknown; contentType?: string; timeoutMs?: number } = {},
  ): Promise<KubeResponse> {
    const payload = opts.body === undefined ? undefined : JSON.stringify(opts.body);
    return new Promise((resolve, reject) => {
      const req = request(
        {
          host: this.#server.hostname,
          port: this.#server.port,
          path,
          method,
          agent: this.#agent,
          timeout: opts.timeoutMs ?? 5000,
          headers: {
            accept: 'application/json',
            ...(payload === undefined
              ? {}
              : {
                  'content-type': opts.contentType ?? 'application/json',
                  'content-length': Buffer.byteLength(payload),
                }),
          },
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('error', reject);
          res.on('end', () => {
            const text = Buffer.concat(chunks).toString('utf8');
            let body: unknown = text;
            try {
              body = JSON.parse(text);
            } catch {
              // Plain-text answers (/readyz) stay text.
            }
            resolve({ status: res.statusCode ?? 0, body, text });
          });
        },
      );
      req.on('timeout', () => req.destroy(new Error(`${method} ${path} timed out`)));
      req.on('error', reject);
      req.end(payload);
    });
  }

  close(): void {
    this.#agent.destroy();
  }
}

/** Reads the server and the client certificate paths back from a kubeconfig written by certs.ts. */
export function credentialsFromKubeconfig(path: string): Credentials {
  const text = readFileSync(path, 'utf8');
  const field = (name: string) => {
    const m = new RegExp(`^\\s*${name}: (.+)$`, 'm').exec(text);
    if (!m) throw new Error(`${path} has no ${name}`);
    return m[1]!.trim();
  };
  return {
    server: field('server'),
    ca: field('certificate-authority'),
    cert: field('client-certificate'),
    key: field('client-key'),
  };
}
