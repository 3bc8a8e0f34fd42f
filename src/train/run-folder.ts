// Which run folder `xp run --resume` continues for a trial: under runs/<experiment>/, the one of the same config
// hash whose backup was written last, by a process that no longer runs (the run was KILLED or FAILED; a FINISHED
// run keeps no backup).
import fs from 'node:fs';
import path from 'node:path';
import { processAlive } from '../util/process.ts';
import { backupInfo } from './backup.ts';
import { readConfigHash } from './outputs.ts';

export interface ResumableRun {
  runId: string;
  runDir: string;
  /** The epochs the backup holds: training goes on after them. */
  epoch: number;
}

export function findResumable(runsRoot: string, experimentName: string, configHash: string): ResumableRun | undefined {
  const dir = path.join(runsRoot, experimentName);
  let names: string[];
  try {
    names = fs.readdirSync(dir);
  } catch {
    return undefined;
  }
  let latest: (ResumableRun & { writtenAt: number }) | undefined;
  for (const runId of names) {
    const runDir = path.join(dir, runId);
    const backup = backupInfo(runDir);
    if (!backup || readConfigHash(runDir) !== configHash) continue;
    if (backup.pid !== undefined && backup.pid !== process.pid && processAlive(backup.pid, backup.host)) continue; // still training
    if (!latest || backup.writtenAt > latest.writtenAt) latest = { runId, runDir, epoch: backup.epoch, writtenAt: backup.writtenAt };
  }
  return latest && { runId: latest.runId, runDir: latest.runDir, epoch: latest.epoch };
}
