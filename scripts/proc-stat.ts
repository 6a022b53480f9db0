// What the benches read from /proc/PID/stat: a process's parent and its CPU time (all its
// threads), in clock ticks (USER_HZ, 100 a second on Linux). Fields after the command name,
// which is in parentheses and may hold spaces: ppid is the 2nd, utime the 12th, stime the 13th.
export const TICKS_PER_SECOND = 100;

export interface ProcTimes {
  readonly ppid: number;
  /** utime, in ticks. */
  readonly user: number;
  /** stime, in ticks. */
  readonly system: number;
}

export function parseProcStat(stat: string): ProcTimes {
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return { ppid: Number(f[1]), user: Number(f[11]), system: Number(f[12]) };
}
