// What a run folder keeps at each epoch end to continue an interrupted run where it stopped, as Keras'
// BackupAndRestore does: the epochs done and their history, the weights of the model that trains for the trial,
// its optimizer's slots, and the checkpoint's and early stopping's state with their snapshots. Random state needs
// no saving: batches, augmentation draws and dropout masks follow from the seed and the step, and the loop
// replays the draws of the epochs done (cheap: no image is touched).
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs-node';
import { XpError } from '../errors.ts';
import { freeSpaceHint, writing } from '../util/disk.ts';
import type { EpochLogs } from '../events.ts';
import type { CheckpointState, EarlyStoppingState, Trial } from './trial-state.ts';
import type { PlateauState } from '../model/schedule.ts';
import { BACKUP_DIR, BACKUP_STATE, BACKUP_TENSORS, backupDir, damagedBackup } from './run-folder.ts';

const FORMAT = 1;

/** A trial's state after `epoch` epochs, read from its run folder. */
export interface Backup {
  epoch: number;
  history: EpochLogs[];
  checkpoint: CheckpointState;
  earlyStopping?: EarlyStoppingState;
  /** ReduceLROnPlateau's state (optimizer.schedule type plateau). */
  schedule?: PlateauState;
  /** The trained model's weights, in model.getWeights() order. */
  weights: tf.Tensor[];
  /** The optimizer's weights, each slot named by the index of its variable in model.weights. */
  optimizer: { variable: number; suffix: string; tensor: tf.Tensor }[];
  checkpointWeights?: tf.Tensor[];
  earlyStoppingWeights?: tf.Tensor[];
}

interface TensorEntry {
  shape: number[];
  dtype: 'float32' | 'int32';
  offset: number;
  /** For optimizer weights: the index of the variable in model.weights and the slot's suffix; or 'iterations'. */
  variable?: number;
  suffix?: string;
}

interface StateFile {
  format: number;
  epoch: number;
  /** The process that trains the run: a backup of a live process is not resumed by another. */
  pid?: number;
  host?: string;
  history: EpochLogs[];
  checkpoint: CheckpointState;
  earlyStopping?: EarlyStoppingState;
  schedule?: PlateauState;
  tensors: {
    weights: TensorEntry[];
    optimizer: TensorEntry[];
    checkpoint?: TensorEntry[];
    earlyStopping?: TensorEntry[];
  };
}

export interface BackupInput {
  epoch: number;
  history: EpochLogs[];
  checkpoint: CheckpointState;
  earlyStopping?: EarlyStoppingState;
  schedule?: PlateauState;
  model: tf.LayersModel;
  /** A snapshot, or 'weights' when it was taken at this epoch's end: the model's weights are its bytes. */
  checkpointWeights?: tf.Tensor[] | 'weights';
  earlyStoppingWeights?: tf.Tensor[] | 'weights';
}

// The tensors are copied into one buffer per run folder, kept from epoch to epoch, and written to disk while
// training goes on: the next backup of the folder, its removal and the end of training wait for the write.
const buffers = new Map<string, Buffer>();
const inFlight = new Map<string, Promise<void>>();

/**
 * Takes the backup now and writes it in the background, next to the last one, then replaces it: a crash
 * mid-write leaves the previous one whole. A write that failed fails the next call for the folder.
 */
export async function writeBackup(runDir: string, b: BackupInput): Promise<void> {
  await inFlight.get(runDir); // the last write is done with the buffer
  const indexOf = new Map(b.model.weights.map((w, i) => [w.name, i]));
  const optimizer = b.model.optimizer ? await b.model.optimizer.getWeights() : [];
  const weights = b.model.getWeights();
  const snapshots = (s: tf.Tensor[] | 'weights' | undefined) => (Array.isArray(s) ? s : []);
  const all = [
    ...weights,
    ...optimizer.map((o) => o.tensor),
    ...snapshots(b.checkpointWeights),
    ...snapshots(b.earlyStoppingWeights),
  ];
  const bytes = all.reduce((n, t) => n + t.size * 4, 0);
  let buffer = buffers.get(runDir);
  if (buffer?.length !== bytes) {
    buffer = Buffer.allocUnsafeSlow(bytes);
    buffers.set(runDir, buffer);
  }
  let offset = 0;
  const add = (t: tf.Tensor, extra: Partial<TensorEntry> = {}): TensorEntry => {
    const data = t.dataSync() as Float32Array | Int32Array;
    buffer.set(new Uint8Array(data.buffer, data.byteOffset, data.byteLength), offset); // a copy: the dense-head step updates the kernel in place
    const entry = { shape: t.shape, dtype: t.dtype as 'float32' | 'int32', offset, ...extra };
    offset += data.byteLength;
    return entry;
  };
  const weightEntries = weights.map((w) => add(w));
  // A snapshot equal to the weights is written once: its entries point at the weights' bytes.
  const snapshotEntries = (s: tf.Tensor[] | 'weights' | undefined) =>
    s === 'weights' ? weightEntries : s?.map((w) => add(w));
  const state: StateFile = {
    format: FORMAT,
    epoch: b.epoch,
    pid: process.pid,
    host: os.hostname(),
    history: b.history,
    checkpoint: b.checkpoint,
    earlyStopping: b.earlyStopping,
    schedule: b.schedule,
    tensors: {
      weights: weightEntries,
      optimizer: optimizer.map(({ name, tensor }) => {
        if (name === 'iter' || name.endsWith('iterations')) return add(tensor, { suffix: 'iterations' });
        const slash = name.lastIndexOf('/');
        const variable = indexOf.get(name.slice(0, slash));
        if (variable === undefined)
          throw new Error(`backup: optimizer weight ${name} belongs to no weight of the model`);
        return add(tensor, { variable, suffix: name.slice(slash + 1) });
      }),
      checkpoint: snapshotEntries(b.checkpointWeights),
      earlyStopping: snapshotEntries(b.earlyStoppingWeights),
    },
  };
  // Copies the optimizer made for the backup go; its own variables (Adam hands out its slots) stay.
  tf.dispose(optimizer.map((o) => o.tensor).filter((t) => !(t instanceof tf.Variable)));
  const written = persist(runDir, buffer, state);
  written.catch(() => {}); // reported where it is awaited: the folder's next backup, its removal or backupWritten
  inFlight.set(runDir, written);
}

async function persist(runDir: string, buffer: Buffer, state: StateFile): Promise<void> {
  const dir = path.join(runDir, BACKUP_DIR);
  const hint = `${freeSpaceHint(dir, 'XP_RUNS_DIR')}; --no-backup writes no per-epoch backup (${Math.ceil(buffer.length / 1e6)} MB here)`;
  await writing(
    dir,
    () =>
      replaceBackup(runDir, async (next) => {
        await fs.promises.writeFile(path.join(next, BACKUP_TENSORS), buffer);
        await fs.promises.writeFile(path.join(next, BACKUP_STATE), `${JSON.stringify(state)}\n`);
      }),
    hint,
  );
}

/** Fills a new backup folder beside the current one, then swaps them: a crash at any point leaves one whole. */
async function replaceBackup(runDir: string, fill: (next: string) => Promise<void>): Promise<void> {
  const dir = path.join(runDir, BACKUP_DIR);
  const next = `${dir}.next`;
  await fs.promises.rm(next, { recursive: true, force: true });
  await fs.promises.mkdir(next);
  try {
    await fill(next);
  } catch (error) {
    // A part of a backup holds the space the run's other files need (a full disk), and is never read.
    await fs.promises.rm(next, { recursive: true, force: true });
    throw error;
  }
  await fs.promises.rm(`${dir}.old`, { recursive: true, force: true });
  if (fs.existsSync(dir)) await fs.promises.rename(dir, `${dir}.old`);
  await fs.promises.rename(next, dir);
  await fs.promises.rm(`${dir}.old`, { recursive: true, force: true });
}

/** Waits for the folder's backup being written; throws when the write failed. Its buffer is let go. */
export async function backupWritten(runDir: string): Promise<void> {
  const written = inFlight.get(runDir);
  inFlight.delete(runDir);
  buffers.delete(runDir);
  await written;
}

/** The run folder's backup, or undefined when it has none; a damaged one is an error that says how to go on. */
export function readBackup(runDir: string): Backup | undefined {
  const dir = backupDir(runDir);
  if (!dir) return undefined;
  const damaged = (reason: string, cause?: unknown) => damagedBackup(dir, reason, cause);
  let state: StateFile;
  let bytes: Buffer;
  try {
    state = JSON.parse(fs.readFileSync(path.join(dir, BACKUP_STATE), 'utf8')) as StateFile;
    bytes = fs.readFileSync(path.join(dir, BACKUP_TENSORS));
  } catch (error) {
    throw damaged((error as Error).message, error);
  }
  if (state.format !== FORMAT)
    throw new XpError(`${dir} holds a backup of format ${state.format}; this xp reads format ${FORMAT}`, {
      hint: 'resume it with the xp that wrote it, or run again from the start',
    });
  const { weights, optimizer, checkpoint, earlyStopping } = state.tensors ?? {};
  if (!Array.isArray(weights) || !Array.isArray(optimizer)) throw damaged(`${BACKUP_STATE} lists no tensors`);
  const size = (e: TensorEntry) => e.shape.reduce((a, b) => a * b, 1) * 4;
  const described = Math.max(
    0,
    ...[...weights, ...optimizer, ...(checkpoint ?? []), ...(earlyStopping ?? [])].map((e) => e.offset + size(e)),
  );
  if (bytes.length !== described)
    throw damaged(`${BACKUP_TENSORS} has ${bytes.length} bytes where ${BACKUP_STATE} describes ${described}`);
  const tensor = (e: TensorEntry) => {
    const copy = bytes.buffer.slice(bytes.byteOffset + e.offset, bytes.byteOffset + e.offset + size(e));
    return tf.tensor(e.dtype === 'int32' ? new Int32Array(copy) : new Float32Array(copy), e.shape, e.dtype);
  };
  return {
    epoch: state.epoch,
    history: state.history,
    checkpoint: state.checkpoint,
    earlyStopping: state.earlyStopping,
    schedule: state.schedule,
    weights: state.tensors.weights.map(tensor),
    optimizer: state.tensors.optimizer.map((e) => ({
      variable: e.variable ?? -1,
      suffix: e.suffix ?? '',
      tensor: tensor(e),
    })),
    checkpointWeights: state.tensors.checkpoint?.map(tensor),
    earlyStoppingWeights: state.tensors.earlyStopping?.map(tensor),
  };
}

/**
 * The model's weights as the folder's backup holds them after `epoch` epochs; undefined when its backup is of
 * another epoch, absent or damaged (the caller keeps the weights it has and says so).
 */
export function backedUpWeights(runDir: string, epoch: number): tf.Tensor[] | undefined {
  let b: Backup | undefined;
  try {
    b = readBackup(runDir);
  } catch {
    return undefined;
  }
  if (!b) return undefined;
  tf.dispose([...b.optimizer.map((o) => o.tensor), ...(b.checkpointWeights ?? []), ...(b.earlyStoppingWeights ?? [])]);
  if (b.epoch === epoch) return b.weights;
  tf.dispose(b.weights);
  return undefined;
}

/** Sets the model's weights and its optimizer's slots from the backup (slots renamed to this model's variables). */
export async function restoreModel(model: tf.LayersModel, b: Backup): Promise<void> {
  const misfit = model.weights.findIndex((w, i) => b.weights[i]?.shape.join('x') !== w.shape.join('x'));
  if (misfit >= 0 || b.weights.length !== model.weights.length) {
    const which =
      misfit >= 0
        ? `${model.weights[misfit].name} is ${model.weights[misfit].shape.join('x')}, the backup's ${b.weights[misfit]?.shape.join('x') ?? 'missing'}`
        : `${model.weights.length} weights, the backup's ${b.weights.length}`;
    throw new XpError(`the backup does not fit the model (${which})`, {
      hint: 'the data or the code changed since the run was interrupted: run without --resume to train from the start',
    });
  }
  model.setWeights(b.weights);
  if (model.optimizer && b.optimizer.length) {
    await model.optimizer.setWeights(
      b.optimizer.map(({ variable, suffix, tensor }) => ({
        name: suffix === 'iterations' ? 'iter' : `${model.weights[variable].name}/${suffix}`,
        tensor,
      })),
    );
  }
}

export async function removeBackup(runDir: string): Promise<void> {
  await backupWritten(runDir).catch(() => {}); // removed either way
  for (const d of [BACKUP_DIR, `${BACKUP_DIR}.old`, `${BACKUP_DIR}.next`])
    fs.rmSync(path.join(runDir, d), { recursive: true, force: true });
}

/** Backs up a trial that goes on training: its state after its last epoch, with the weights of the model that trains for it. */
export async function backupTrial(t: Trial, runDir: string): Promise<void> {
  const epoch = t.history.length;
  // A snapshot taken at this epoch's end holds the weights the model has now (no step ran since).
  const snapshot = (weights: tf.Tensor[] | undefined, bestEpoch: number | undefined) =>
    weights && bestEpoch === epoch ? 'weights' : weights;
  await writeBackup(runDir, {
    epoch,
    history: t.history,
    checkpoint: t.checkpoint.state(),
    earlyStopping: t.earlyStopping?.state(),
    schedule: t.trainer.schedule.state(),
    model: t.trainer.member.model,
    checkpointWeights: snapshot(t.checkpoint.bestWeights, t.checkpoint.bestEpoch),
    earlyStoppingWeights: snapshot(t.earlyStopping?.bestWeights, t.earlyStopping?.bestEpoch),
  });
}

/** What decides a trial's backed-up tensors besides the trained model: equal for two trials, equal tensors. */
export const backupKey = (t: Trial): string =>
  JSON.stringify([
    t.history.length,
    t.checkpoint.state(),
    t.earlyStopping?.state() ?? null,
    !!t.checkpoint.bestWeights,
    !!t.earlyStopping?.bestWeights,
  ]);

/**
 * A prefix trial follows its trainer's trajectory: until it ends, its backed-up tensors are the trainer's, byte for
 * byte. Its folder gets a hard link to the trainer's tensors once written (a copy where links fail) and a state file
 * of its own (its history); the trainer's next backup waits for it, since it replaces those files.
 */
export function linkBackup(t: Trial, fromRunDir: string, toRunDir: string): void {
  const written = inFlight.get(fromRunDir) ?? Promise.resolve();
  const history = structuredClone(t.history);
  const linked = (async () => {
    await inFlight.get(toRunDir)?.catch(() => {}); // its own earlier write is superseded
    await written;
    await replaceBackup(toRunDir, async (next) => {
      const from = path.join(fromRunDir, BACKUP_DIR);
      const state = JSON.parse(await fs.promises.readFile(path.join(from, BACKUP_STATE), 'utf8')) as StateFile;
      await fs.promises.writeFile(path.join(next, BACKUP_STATE), `${JSON.stringify({ ...state, history })}\n`);
      const tensors = path.join(from, BACKUP_TENSORS);
      await fs.promises
        .link(tensors, path.join(next, BACKUP_TENSORS))
        .catch(() => fs.promises.copyFile(tensors, path.join(next, BACKUP_TENSORS)));
    });
  })();
  linked.catch(() => {});
  inFlight.set(toRunDir, linked);
  inFlight.set(
    fromRunDir,
    Promise.all([written, linked.catch(() => {})]).then(() => {}),
  );
}

/** Puts a trial back where its backup left it; the model that trains for it takes the backed-up weights and slots. */
export async function resumeTrial(t: Trial, b: Backup): Promise<void> {
  t.history.push(...b.history);
  t.checkpoint.restore(b.checkpoint, b.checkpointWeights);
  if (t.earlyStopping && b.earlyStopping) t.earlyStopping.restore(b.earlyStopping, b.earlyStoppingWeights);
  if (t.trainer === t) t.schedule.restore(b.schedule);
  if (t.trainer === t) await restoreModel(t.member.model, b);
  // The snapshots now belong to the trial; the rest is held by the model and its optimizer.
  tf.dispose([...b.weights, ...b.optimizer.map((o) => o.tensor)]);
  if (!t.earlyStopping) tf.dispose(b.earlyStoppingWeights);
}
