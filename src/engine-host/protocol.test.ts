import { ENGINE_HOST_ERRORS, EngineHostError, HostAnswer, parseRequest } from './protocol.ts';

const refusal = (line: string) => {
  try {
    parseRequest(line);
  } catch (err) {
    expect(err).toBeInstanceOf(EngineHostError);
    return { code: (err as EngineHostError).code, message: (err as Error).message };
  }
  throw new Error(`accepted: ${line}`);
};

test('a request is the argument list of one tandemadm command line', () => {
  const args = ['-c', '/run/tandem/ns.vol.res', '--node', 'master', '--run-dir', '/run/tandem', 'up', 'ns.vol'];
  expect(parseRequest(JSON.stringify({ run: args })).run).toEqual(args);
  expect(parseRequest(JSON.stringify({ run: ['--', '--force', 'primary', 'r'] })).run).toEqual([
    '--',
    '--force',
    'primary',
    'r',
  ]);
});

test.each([
  ['not JSON', '{run:', 'the request is not JSON'],
  ['no arguments', JSON.stringify({ run: [] }), 'run: Too small'],
  ['not a list', JSON.stringify({ run: 'up r' }), 'run: Invalid input'],
  ['a program to run', JSON.stringify({ cmd: '/bin/sh', run: undefined }), 'run: Invalid input'],
  ["tandemadm's internal engine flag", JSON.stringify({ run: ['--__engine', 'up', 'r'] }), 'internal flags'],
  ['a NUL byte', JSON.stringify({ run: ['up', 'r\0x'] }), 'NUL byte'],
  ['too many arguments', JSON.stringify({ run: Array.from({ length: 65 }, () => 'x') }), 'Too big'],
])('refuses %s with a clear reason', (_what, line, reason) => {
  const r = refusal(line);
  expect(r.code).toBe(ENGINE_HOST_ERRORS.badRequest);
  expect(r.message).toContain(reason);
});

test('an answer is a tandemadm result or a refusal, nothing else', () => {
  expect(HostAnswer.safeParse({ ok: true, result: { code: 10, stdout: '', stderr: 'refused' } }).success).toBe(true);
  expect(HostAnswer.safeParse({ ok: false, error: { code: 'X', message: 'm' } }).success).toBe(true);
  expect(HostAnswer.safeParse({ ok: true, result: { code: '0' } }).success).toBe(false);
  expect(HostAnswer.safeParse({ ok: true }).success).toBe(false);
});
