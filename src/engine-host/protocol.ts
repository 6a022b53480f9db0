// The engine host's socket (`<run-dir>/engine-host.sock`): the node agent asks the
// engine host to run one `tandemadm` command line, inside the engine host's pod, so
// that every engine `tandemadm up` starts is a process of that long-lived pod and
// not of the agent's container (docs/design/2026-12-06-engine-host.md).
//
// One JSON request per line, one JSON answer per line, then the host closes the
// connection (the engines' control sockets work the same way, src/cli/control.ts).
// The request names tandemadm's arguments only: the host runs its own tandemadm,
// never a program the caller names, and refuses tandemadm's internal flags.
import { z } from 'zod';

export const MAX_REQUEST_BYTES = 64 * 1024;

/** How long the host lets one command run (`up` waits for the engine's READY). */
export const COMMAND_TIMEOUT_MS = 120_000;

/** tandemadm's internal flags (`--__engine` …): only tandemadm itself passes them to the engine it starts. */
const internalFlag = /^--__/;

export const RunRequest = z.object({
  run: z
    .array(
      z
        .string()
        .max(4096)
        .refine((a) => !a.includes('\0'), 'an argument holds a NUL byte')
        .refine((a) => !internalFlag.test(a), "tandemadm's internal flags (--__…) are not accepted"),
    )
    .min(1)
    .max(64),
});
export type RunRequest = z.infer<typeof RunRequest>;

/** The exit code and output of the command, exactly as tandemadm gave them. */
export const RunResult = z.object({ code: z.number().int(), stdout: z.string(), stderr: z.string() });
export type RunResult = z.infer<typeof RunResult>;

export const HostAnswer = z.union([
  z.object({ ok: z.literal(true), result: RunResult }),
  z.object({ ok: z.literal(false), error: z.object({ code: z.string(), message: z.string() }) }),
]);
export type HostAnswer = z.infer<typeof HostAnswer>;

export const ENGINE_HOST_ERRORS = {
  /** The request was not one JSON line of RunRequest's shape. */
  badRequest: 'TANDEM_ERR_ENGINE_HOST_REQUEST',
  /** Nothing listens on the socket: the engine host pod is not running on this node (yet). */
  unavailable: 'TANDEM_ERR_ENGINE_HOST_UNAVAILABLE',
  /** The host did not answer in time, or answered with something that is not a HostAnswer. */
  protocol: 'TANDEM_ERR_ENGINE_HOST_PROTOCOL',
} as const;
export type EngineHostErrorCode = (typeof ENGINE_HOST_ERRORS)[keyof typeof ENGINE_HOST_ERRORS];

export class EngineHostError extends Error {
  readonly code: EngineHostErrorCode;
  constructor(code: EngineHostErrorCode, message: string) {
    super(message);
    this.name = 'EngineHostError';
    this.code = code;
  }
}

/** Parses one request line; throws EngineHostError(badRequest) with the reason. */
export function parseRequest(line: string): RunRequest {
  let json: unknown;
  try {
    json = JSON.parse(line);
  } catch {
    throw new EngineHostError(ENGINE_HOST_ERRORS.badRequest, 'the request is not JSON');
  }
  const r = RunRequest.safeParse(json);
  if (!r.success)
    throw new EngineHostError(
      ENGINE_HOST_ERRORS.badRequest,
      r.error.issues.map((i) => `${i.path.join('.') || 'request'}: ${i.message}`).join('; '),
    );
  return r.data;
}
