// Which run folder `xp run --resume` continues for a trial: under runs/<experiment>/, the one of the same config
// hash whose backup was written last, by a process that no longer runs (the run was KILLED or FAILED; a FINISHED
// run keeps no backup).
// Light on purpose (no TensorFlow): `xp run --dry-run --resume` reads it too.
import fs from 'node:fs';
import path from 'node:path';
import { processAlive } from '../util/process.ts';

/** Where backup.ts keeps a run's backup in its folder, and the file that describes it. */
export const BACKUP_DIR = 'backup';
export const BACKUP_STATE = 'state.json';

/** The folder of the run's whole backup: the last one, or the one before while the last replaces it. */
export function backupDir(runDir: string): string | undefined {
  return [path.join(runDir, BACKUP_DIR), path.join(runDir, `${BACKUP_DIR}.old`)].find((d) =>
    fs.existsSync(path.join(d, BACKUP_STATE)),
  );
}

/** What a run folder's backup says without reading its tensors: its epoch, the process that wrote it and when. */
export function backupInfo(
  runDir: string,
): { epoch: number; pid?: number; host?: string; writtenAt: number } | undefined {
  const dir = backupDir(runDir);
  if (!dir) return undefined;
  try {
    const file = path.join(dir, BACKUP_STATE);
    const state = JSON.parse(fs.readFileSync(file, 'utf8')) as { epoch: number; pid?: number; host?: string };
    return { epoch: state.epoch, pid: state.pid, host: state.host, writtenAt: fs.statSync(file).mtimeMs };
  } catch {
    return undefined;
  }
}

/** The first line of a run folder's experiment.yaml (outputs.ts writeExperiment): where it comes from, its config hash. */
export function experimentHeader(configHash: string, sourceFile?: string): string {
  return `# Resolved experiment (every default filled in)${sourceFile ? ` from ${sourceFile}` : ''}, config hash ${configHash}`;
}

/** The config hash in a run folder's experiment.yaml header; undefined when absent. */
export function readConfigHash(runDir: string): string | undefined {
  let head: string;
  try {
    head = fs.readFileSync(path.join(runDir, 'experiment.yaml'), 'utf8').split('\n', 1)[0];
  } catch {
    return undefined;
  }
  return /, config hash ([0-9a-f]+)$/.exec(head)?.[1];
}

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
    if (!latest || backup.writtenAt > latest.writtenAt)
      latest = { runId, runDir, epoch: backup.epoch, writtenAt: backup.writtenAt };
  }
  return latest && { runId: latest.runId, runDir: latest.runDir, epoch: latest.epoch };
}
