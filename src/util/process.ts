// Whether a process that wrote a file (a journal, a backup) still runs, from its pid and host.
import os from 'node:os';

/** True when `pid` runs on this machine; a process of another host cannot be checked and is taken as gone. */
export function processAlive(pid: number, host?: string): boolean {
  if (host !== undefined && host !== os.hostname()) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}
