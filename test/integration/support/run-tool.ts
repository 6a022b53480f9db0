// Runs an external tool (nbdinfo, nbdcopy, qemu-img, fio …) without a shell, with a timeout,
// and never throws on a non-zero exit: tests assert on the code and the output.

import { execFile } from 'node:child_process';

export interface ToolResult {
  /** Exit code; null if the tool was killed (timeout or signal). */
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

export function runTool(
  cmd: string,
  args: readonly string[],
  opts: { timeoutMs?: number; env?: NodeJS.ProcessEnv } = {},
): Promise<ToolResult> {
  return new Promise((resolve) => {
    execFile(
      cmd,
      args,
      { timeout: opts.timeoutMs ?? 60_000, maxBuffer: 64 * 1024 * 1024, env: { ...process.env, ...opts.env } },
      (err, stdout, stderr) => {
        const code = err === null ? 0 : typeof err.code === 'number' ? err.code : null;
        resolve({ code, stdout, stderr });
      },
    );
  });
}
