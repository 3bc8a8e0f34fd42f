// Which run folder `xp run --resume` continues for a trial: under runs/<experiment>/, the one of the same config
// hash whose backup was written last, by a process that no longer runs (the run was KILLED or FAILED; a FINISHED
// run keeps no backup). A damaged backup is reported, never passed over as if there were none.
// Light on purpose (no TensorFlow): `xp run --dry-run --resume` reads it too.
import fs from 'node:fs';
import path from 'node:path';
import YAML from 'yaml';
import type { Experiment } from '../config/types.ts';
import { XpError } from '../errors.ts';
import { processAlive } from '../util/process.ts';

/** Where backup.ts keeps a run's backup in its folder, the file that describes it and the file of its tensors. */
export const BACKUP_DIR = 'backup';
export const BACKUP_STATE = 'state.json';
export const BACKUP_TENSORS = 'tensors.bin';

/** The folder of the run's whole backup: the last one, or the one before while the last replaces it. */
export function backupDir(runDir: string): string | undefined {
  return [path.join(runDir, BACKUP_DIR), path.join(runDir, `${BACKUP_DIR}.old`)].find((d) =>
    fs.existsSync(path.join(d, BACKUP_STATE)),
  );
}

/** A backup that cannot be resumed, and what to do: one message wherever it is found. */
export function damagedBackup(dir: string, reason: string, cause?: unknown): XpError {
  return new XpError(`${dir} holds a damaged backup (${reason})`, {
    cause,
    hint: 'remove that folder: xp run --resume then continues an older interrupted run of this config, or trains it from the start (xp run without --resume trains from the start and leaves the folder as it is)',
  });
}

export type BackupInfo =
  | { epoch: number; pid?: number; host?: string; writtenAt: number; damaged?: undefined }
  | { damaged: string; dir: string; writtenAt: number };

/**
 * What a run folder's backup says without reading its tensors: its epoch, the process that wrote it and when; or,
 * for a backup folder whose description is missing or unreadable, why it cannot be resumed.
 */
export function backupInfo(runDir: string): BackupInfo | undefined {
  const dir =
    backupDir(runDir) ??
    [path.join(runDir, BACKUP_DIR), path.join(runDir, `${BACKUP_DIR}.old`)].find((d) => fs.existsSync(d));
  if (!dir) return undefined;
  const file = path.join(dir, BACKUP_STATE);
  const writtenAt = (fs.statSync(file, { throwIfNoEntry: false }) ?? fs.statSync(dir)).mtimeMs;
  const damaged = (reason: string) => ({ damaged: reason, dir, writtenAt });
  let state: { epoch?: unknown; pid?: number; host?: string };
  try {
    state = JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    return damaged(
      code === 'ENOENT'
        ? `${BACKUP_STATE} is missing`
        : code
          ? `${BACKUP_STATE} cannot be read: ${code}`
          : `${BACKUP_STATE} is not valid JSON: ${(error as Error).message}`,
    );
  }
  if (!Number.isSafeInteger(state?.epoch) || (state.epoch as number) < 1)
    return damaged(`${BACKUP_STATE} names no epoch`);
  if (!fs.existsSync(path.join(dir, BACKUP_TENSORS))) return damaged(`${BACKUP_TENSORS} is missing`);
  return { epoch: state.epoch as number, pid: state.pid, host: state.host, writtenAt };
}

/** A run folder's resolved experiment, as outputs.ts writeExperiment writes it. */
export const EXPERIMENT_FILE = 'experiment.yaml';

/** The resolved experiment of a run folder, as written; an unreadable file throws, naming it. */
export function readRunExperiment(runDir: string): Partial<Experiment> {
  const file = path.join(runDir, EXPERIMENT_FILE);
  try {
    const parsed = YAML.parse(fs.readFileSync(file, 'utf8'));
    if (parsed && typeof parsed === 'object') return parsed as Partial<Experiment>;
    throw new Error('not a YAML mapping');
  } catch (error) {
    throw new XpError(`${file} cannot be read (${(error as Error).message})`, { cause: error });
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
    head = fs.readFileSync(path.join(runDir, EXPERIMENT_FILE), 'utf8').split('\n', 1)[0];
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

/** The latest interrupted run of a config has a backup that cannot be resumed. */
export interface DamagedRun {
  runId: string;
  runDir: string;
  /** The backup folder, and what is wrong with it. */
  backupDir: string;
  damaged: string;
}

/**
 * The run of this config whose backup was written last, by a process that no longer runs: resumable, or damaged
 * (the caller says so rather than start over); undefined when there is none.
 */
export function findResumable(
  runsRoot: string,
  experimentName: string,
  configHash: string,
): ResumableRun | DamagedRun | undefined {
  const dir = path.join(runsRoot, experimentName);
  let names: string[];
  try {
    names = fs.readdirSync(dir);
  } catch {
    return undefined;
  }
  let latest: ((ResumableRun | DamagedRun) & { writtenAt: number }) | undefined;
  for (const runId of names) {
    const runDir = path.join(dir, runId);
    const backup = backupInfo(runDir);
    if (!backup || readConfigHash(runDir) !== configHash) continue;
    if (latest && backup.writtenAt <= latest.writtenAt) continue;
    if (backup.damaged !== undefined)
      latest = { runId, runDir, backupDir: backup.dir, damaged: backup.damaged, writtenAt: backup.writtenAt };
    else if (backup.pid === undefined || backup.pid === process.pid || !processAlive(backup.pid, backup.host))
      latest = { runId, runDir, epoch: backup.epoch, writtenAt: backup.writtenAt };
  }
  if (!latest) return undefined;
  const { writtenAt: _, ...found } = latest;
  return found;
}
