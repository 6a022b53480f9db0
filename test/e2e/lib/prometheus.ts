// A real Prometheus (Debian's, from the package scripts/ensure-promtool.sh unpacks)
// on this machine, scraping the node agents' /metrics every second with
// honor_labels, as the chart's PodMonitor has a Prometheus do. The e2e suites ask it
// the dashboard's queries.
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { promisify } from 'node:util';
import yaml from 'js-yaml';
import { repoRoot } from '../harness/paths.ts';
import { eventually } from './eventually.ts';

const run = promisify(execFile);

export type Series = { metric: Record<string, string>; value: [number, string] };

async function freePort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve));
  const port = (srv.address() as { port: number }).port;
  await new Promise((resolve) => srv.close(resolve));
  return port;
}

export class Prometheus {
  readonly #child: ChildProcess;
  readonly #dir: string;
  readonly url: string;
  #log = '';

  private constructor(child: ChildProcess, dir: string, url: string) {
    this.#child = child;
    this.#dir = dir;
    this.url = url;
    child.stderr?.on('data', (b: Buffer) => {
      this.#log = (this.#log + b.toString()).slice(-8000);
    });
  }

  /** Starts it scraping `targets` (host:port) every second, and waits until it is ready. */
  static async start(targets: readonly string[]): Promise<Prometheus> {
    const built = await run('bash', [join(repoRoot, 'scripts/ensure-promtool.sh')], { maxBuffer: 16 << 20 });
    const binary = join(dirname(built.stdout.trim().split('\n').at(-1)!), 'prometheus');
    const dir = await mkdtemp(join(tmpdir(), 'tandem-prometheus-'));
    await writeFile(
      join(dir, 'prometheus.yml'),
      yaml.dump({
        global: { scrape_interval: '1s', scrape_timeout: '900ms', evaluation_interval: '1s' },
        scrape_configs: [{ job_name: 'tandem-agents', honor_labels: true, static_configs: [{ targets }] }],
      }),
    );
    const port = await freePort();
    const child = spawn(
      binary,
      [
        `--config.file=${join(dir, 'prometheus.yml')}`,
        `--storage.tsdb.path=${join(dir, 'data')}`,
        `--web.listen-address=127.0.0.1:${port}`,
        '--log.level=warn',
      ],
      { stdio: ['ignore', 'ignore', 'pipe'] },
    );
    const p = new Prometheus(child, dir, `http://127.0.0.1:${port}`);
    await eventually(
      async () => {
        if (child.exitCode !== null) throw new Error(`prometheus exited ${child.exitCode}: ${p.#log}`);
        expect((await fetch(`${p.url}/-/ready`)).status).toBe(200);
      },
      { timeoutMs: 30_000, what: 'prometheus ready' },
    );
    return p;
  }

  /** An instant query, at `atMs` (epoch milliseconds) or now. */
  async query(expr: string, atMs?: number): Promise<Series[]> {
    const params = new URLSearchParams({ query: expr, ...(atMs !== undefined ? { time: String(atMs / 1000) } : {}) });
    const res = await fetch(`${this.url}/api/v1/query?${params}`);
    const body = (await res.json()) as {
      status: string;
      error?: string;
      data?: { resultType: string; result: Series[] };
    };
    if (body.status !== 'success') throw new Error(`query ${expr}: ${body.error ?? res.status}`);
    if (body.data?.resultType !== 'vector') throw new Error(`query ${expr}: a ${body.data?.resultType}, not a vector`);
    return body.data.result;
  }

  /** Scrape targets that are up, from Prometheus's own `up` series. */
  async targetsUp(): Promise<number> {
    return (await this.query('up == 1')).length;
  }

  async stop(): Promise<void> {
    if (this.#child.exitCode === null) {
      const gone = new Promise((resolve) => this.#child.once('exit', resolve));
      this.#child.kill('SIGTERM');
      await gone;
    }
    await rm(this.#dir, { recursive: true, force: true });
  }
}
