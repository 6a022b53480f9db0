// The node agent's side of the engine host's socket (protocol.ts): run one
// tandemadm command line in the engine host's pod and get its exit code and output.
import net from 'node:net';
import { COMMAND_TIMEOUT_MS, ENGINE_HOST_ERRORS, EngineHostError, HostAnswer, type RunResult } from './protocol.ts';

export class EngineHostClient {
  readonly socket: string;
  readonly #timeoutMs: number;

  constructor(socket: string, o: { timeoutMs?: number } = {}) {
    this.socket = socket;
    // The host's own limit on the command, plus time to answer.
    this.#timeoutMs = o.timeoutMs ?? COMMAND_TIMEOUT_MS + 10_000;
  }

  /** `tandemadm ARGS…` in the engine host; EngineHostError when the host cannot be asked or does not answer. */
  run(args: readonly string[]): Promise<RunResult> {
    return new Promise((resolve, reject) => {
      const s = net.connect(this.socket);
      let buf = '';
      const fail = (err: EngineHostError) => {
        clearTimeout(timer);
        s.destroy();
        reject(err);
      };
      const timer = setTimeout(
        () =>
          fail(
            new EngineHostError(
              ENGINE_HOST_ERRORS.protocol,
              `the engine host on ${this.socket} did not answer within ${this.#timeoutMs} ms`,
            ),
          ),
        this.#timeoutMs,
      );
      s.setEncoding('utf8');
      s.on('connect', () => s.write(`${JSON.stringify({ run: args })}\n`));
      s.on('data', (c: string) => {
        buf += c;
      });
      s.on('end', () => {
        clearTimeout(timer);
        let answer: HostAnswer;
        try {
          answer = HostAnswer.parse(JSON.parse(buf));
        } catch {
          reject(
            new EngineHostError(
              ENGINE_HOST_ERRORS.protocol,
              `the engine host on ${this.socket} sent a malformed answer`,
            ),
          );
          return;
        }
        if (answer.ok) resolve(answer.result);
        else
          reject(new EngineHostError(ENGINE_HOST_ERRORS.protocol, `the engine host refused: ${answer.error.message}`));
      });
      s.on('error', (err: NodeJS.ErrnoException) =>
        fail(
          err.code === 'ENOENT' || err.code === 'ECONNREFUSED'
            ? new EngineHostError(
                ENGINE_HOST_ERRORS.unavailable,
                `no engine host answers on ${this.socket}: the engine host pod is not running on this node (yet)`,
              )
            : new EngineHostError(ENGINE_HOST_ERRORS.protocol, `engine host on ${this.socket}: ${err.message}`),
        ),
      );
    });
  }
}
