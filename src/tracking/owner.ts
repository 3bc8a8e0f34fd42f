// Which process owns a sweep's parent run. A trial's run folder names its process in its journal (journal.ts); a
// sweep's parent has no folder, so the process that trains the sweep is written on the parent itself, as tags. A
// parent still RUNNING in MLflow whose process is gone (SIGKILL, power loss) is then told from one that trains.
import os from 'node:os';
import { processAlive } from '../util/process.ts';

export const OWNER_PID = 'xp.pid';
export const OWNER_HOST = 'xp.host';

/** The tags that name this process as the owner of a sweep's parent run. */
export function ownerTags(): Record<string, string> {
  return { [OWNER_PID]: String(process.pid), [OWNER_HOST]: os.hostname() };
}

/**
 * The pid of a parent run's owner when it ran on this machine and is gone; undefined when it runs, ran elsewhere
 * (it cannot be checked from here), or is not recorded (a queued sweep: its submitter's exit ends nothing).
 */
export function goneOwner(tags: Record<string, string>): number | undefined {
  const pid = Number(tags[OWNER_PID]);
  if (!tags[OWNER_PID] || !Number.isSafeInteger(pid) || pid <= 0 || tags[OWNER_HOST] !== os.hostname())
    return undefined;
  return processAlive(pid, tags[OWNER_HOST]) ? undefined : pid;
}
