// Is a process still running? A zombie is not: it has exited and closed every file
// (the engine's disk is free), only its parent has not collected its exit status yet.
// In a container whose first process is not an init, an engine whose `tandemadm up`
// has exited is re-parented to that process, which may never collect it.
import { readFileSync } from 'node:fs';

export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (err) {
    // EPERM: it exists, owned by someone else.
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
  let stat: string;
  try {
    stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return false; // it exited between the two looks
  }
  // proc(5): "pid (comm) state …"; comm may hold spaces and parentheses.
  const close = stat.lastIndexOf(')');
  return stat.charAt(close + 2) !== 'Z';
}
