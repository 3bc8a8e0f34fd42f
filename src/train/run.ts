// Runs one group of trials that share data, backbone and augmentation (a single run is a group of one):
// load once, train every head on the same backbone features, write each trial's outputs, tell the callbacks.
import fs from 'node:fs';
import path from 'node:path';
import type * as tf from '@tensorflow/tfjs-node';
import type { Experiment } from '../config/types.ts';
import { loadBackbone, type Backbone } from '../model/backbone.ts';
import { accelPolicy, compileForInference } from '../accel/index.ts';
import { buildHead, composeModel } from '../model/head.ts';
import { trainingAccuracy, trainingLoss } from '../model/loss.ts';
import { taskFor } from '../model/task.ts';
import { classWeights } from '../config/classes.ts';
import { predictionTap, type PredictionTap } from './metrics.ts';
import { buildOptimizer } from '../model/optimizer.ts';
import { writeSavedModel } from '../model/saved-run.ts';
import { layerSummary } from '../model/summary.ts';
import type {
  Callbacks,
  EarlyStoppingReport,
  EpochLogs,
  RunEndInfo,
  RunResult,
  RunStartInfo,
  PruneCheck,
  StopCheck,
} from '../events.ts';
import { prepareData, type PreparedData } from './data.ts';
import { trainGroup, type MemberResult } from './loop.ts';
import { backboneFeatures } from './feed.ts';
import { computeValidationFeatures } from './validation.ts';
import { trainersOf, usesTrainerModel } from './sharing.ts';
import { newRunDir, writeConfusion, writeCurves, writeExperiment, writeHistory, writeRunFile } from './outputs.ts';
import type { Progress } from './progress.ts';
import { readBackup, removeBackup } from './backup.ts';
import { EXPERIMENT_FILE } from './run-folder.ts';
import { Interrupted, XpError } from '../errors.ts';
import { DiskFullError } from '../util/disk.ts';

export interface TrialSpec {
  name: string;
  experiment: Experiment;
  configHash: string;
  callbacks: Callbacks[];
  parentRunId?: string;
  /** An interrupted run of this trial to continue, in its folder, from its backup (xp run --resume). */
  resume?: { runId: string; runDir: string };
  /** A search's pruner, asked after each epoch but the last. */
  prune?: PruneCheck;
}

export interface TrialOutcome {
  name: string;
  runId: string;
  runDir: string;
  status: RunEndInfo['status'];
  error?: string;
  history: EpochLogs[];
  bestEpoch?: number;
  /** The saved model on the whole validation set: the run's headline figures. */
  result?: RunResult;
  earlyStopping?: EarlyStoppingReport;
  prunedAt?: RunEndInfo['prunedAt'];
  wallSeconds: number;
  tensorsPerEpoch: number[];
}

export interface GroupOptions {
  baseDir: string;
  sourceFile?: string;
  sources?: RunStartInfo['sources'];
  runsRoot: string;
  dataDir?: string;
  progress: Progress;
  shouldStop: StopCheck;
  /** Reuse data already decoded by an earlier group with the same data section. */
  data?: PreparedData;
  /** Back up each run's state at every epoch end (Keras BackupAndRestore) so that an interrupted run can resume. */
  backup?: boolean;
}

export const ARTIFACTS = [
  EXPERIMENT_FILE,
  'history.csv',
  'history.json',
  'curves.png',
  'summary.txt',
  'confusion_matrix.json',
  'confusion_matrix.png',
  'model',
];

/**
 * Trains the group. A stop asked for before training begins (while images decode or the backbone loads) ends
 * every trial KILLED at once, with no run folder or MLflow run; `data` is then absent if decoding was cut short.
 */
export async function runGroup(
  trials: TrialSpec[],
  opts: GroupOptions,
): Promise<{ outcomes: TrialOutcome[]; data?: PreparedData }> {
  const started = Date.now();
  const first = trials[0].experiment;
  const { progress } = opts;
  const notStarted = (): TrialOutcome[] =>
    trials.map((t) => ({
      name: t.name,
      runId: t.resume?.runId ?? '',
      runDir: t.resume?.runDir ?? '',
      status: 'KILLED',
      error: 'interrupted before training began',
      history: [],
      wallSeconds: (Date.now() - started) / 1000,
      tensorsPerEpoch: [],
    }));
  let data: PreparedData;
  try {
    data =
      opts.data ??
      (await prepareData(first.data, {
        baseDir: opts.baseDir,
        dataDir: opts.dataDir,
        onWarning: (m) => progress.line(`warning: ${m}`),
        log: (l) => progress.line(l),
        shouldStop: () => opts.shouldStop('epoch'),
      }));
  } catch (error) {
    if (error instanceof Interrupted) return { outcomes: notStarted() };
    throw error;
  }
  const skipped = data.train.skipped.length + data.validation.skipped.length;
  progress.line(
    `Found ${data.train.count} training and ${data.validation.count} validation images of ${data.numClasses} classes (${data.classNames.join(', ')})${skipped ? `, ${skipped} unreadable skipped` : ''}`,
  );

  // Weights paths are absolute (or URLs) already: config resolved them against the file that wrote them.
  const backbone = await loadBackbone(first.backbone, first.data.image_size);
  const frozen = !first.backbone.trainable && first.backbone.trainable_from === undefined;
  // A frozen backbone runs as one compiled TensorFlow graph (BN folded into fused convolutions).
  const forward = frozen && !opts.shouldStop('epoch') ? await compileForInference(backbone.model) : undefined;
  const notBegun = () => {
    forward?.dispose();
    for (const w of backbone.model.weights) w.dispose();
    return { outcomes: notStarted(), data };
  };
  if (opts.shouldStop('epoch')) return notBegun();
  progress.line(
    `Backbone ${first.backbone.name} (${first.backbone.weights}) cut at ${first.backbone.cut_layer}: features ${backbone.featureShape.join('x')}, ${frozen ? 'frozen' : 'fine-tuned'}`,
  );
  // The frozen backbone's pass over the validation images, once for the group and before any run starts: a stop
  // asked for during it ends the runs as one asked for while images decode.
  const validationFeatures = forward
    ? await computeValidationFeatures(data, first, backboneFeatures(backbone, forward), () => opts.shouldStop('epoch'))
    : undefined;
  if (forward && !validationFeatures) return notBegun();

  // A trial trained as the first epochs of a longer one (sharing.ts) is given that one's model when it can: its
  // outputs are written when its last epoch ends, so it needs no weights of its own (same layers and names).
  const trainers = trainersOf(trials.map((t) => t.experiment));
  const owner = trials.map((t, i) => (trainers[i] !== i && usesTrainerModel(t.experiment) ? trainers[i] : i));
  const built = new Map<
    number,
    { head: tf.LayersModel; model: tf.LayersModel; full: tf.LayersModel; classWeights?: number[]; tap?: PredictionTap }
  >();
  const modelsOf = (i: number) => {
    const known = built.get(owner[i]);
    if (known) return known;
    const t = trials[owner[i]];
    const head = buildHead(backbone.featureShape, t.experiment.head, data.numClasses, {
      seed: t.experiment.training.seed,
    });
    const model = frozen ? head : composeModel(backbone.model, head);
    const task = taskFor(data.numClasses);
    const weights = classWeights(t.experiment.training.class_weight, data.classNames, data.train.labels);
    const tap = t.experiment.training.metrics?.length ? predictionTap() : undefined;
    model.compile({
      optimizer: buildOptimizer(t.experiment.optimizer),
      loss: trainingLoss(task, { labelSmoothing: t.experiment.training.label_smoothing, classWeights: weights }),
      metrics: [trainingAccuracy(task, weights), ...(tap ? [tap.metric] : [])],
    });
    const full = frozen ? composeModel(backbone.model, head) : model;
    const models = { head, model, full, classWeights: weights, tap };
    built.set(owner[i], models);
    return models;
  };
  // Every model is built (once per owner) before any run folder is written.
  const models = trials.map((_, i) => modelsOf(i));
  const members = trials.map((t, i) => {
    const { runId, runDir } = t.resume ?? newRunDir(opts.runsRoot, t.experiment.name);
    const backup = t.resume && readBackup(runDir);
    if (t.resume && !backup)
      throw new XpError(`${runDir} has no backup to resume from`, {
        hint: 'runs back up their state at each epoch end when run with backups on; run it again from the start',
      });
    writeExperiment(runDir, t.experiment, { sourceFile: opts.sourceFile, configHash: t.configHash });
    const { head, model, full, classWeights, tap } = models[i];
    writeRunFile(path.join(runDir, 'summary.txt'), layerSummary(full));
    return { spec: t, runId, runDir, head, model, full, classWeights, tap, backup };
  });

  for (const m of members) {
    const counts = paramCounts(m.full, m.head, frozen);
    for (const cb of m.spec.callbacks) {
      await cb.onRunStart?.({
        runId: m.runId,
        runDir: m.runDir,
        runName: m.spec.name,
        experiment: m.spec.experiment,
        accel: accelPolicy().name,
        sourceFile: opts.sourceFile,
        sources: opts.sources,
        configHash: m.spec.configHash,
        parentRunId: m.spec.parentRunId,
        resumedAt: m.backup?.epoch,
        resumedHistory: m.backup?.history,
        facts: {
          ...counts,
          train_images: data.train.count,
          validation_images: data.validation.count,
          class_names: data.classNames,
        },
        datasets: [
          {
            name: `${path.basename(path.dirname(data.train.dir))}/${path.basename(data.train.dir)}`,
            digest: data.train.digest,
            source: data.train.dir,
            context: 'train',
          },
          {
            name: `${path.basename(path.dirname(data.validation.dir))}/${path.basename(data.validation.dir)}`,
            digest: data.validation.digest,
            source: data.validation.dir,
            context: 'eval',
          },
        ],
      });
    }
  }

  // Each trial's outputs and run end as soon as it is done (a prefix trial's mid-group), else FAILED below.
  const outcomes: (TrialOutcome | undefined)[] = members.map(() => undefined);
  const endRun = async (i: number, r: MemberResult | undefined, failure?: Error) => {
    const m = members[i];
    const history = r?.history ?? [];
    // A trial that completed its epochs before Ctrl-C stopped the rest of its group is FINISHED (resume skips it).
    const ranItsEpochs = r !== undefined && (r.stoppedEarly || history.length === m.spec.experiment.training.epochs);
    let status: RunEndInfo['status'] = failure
      ? 'FAILED'
      : r?.prunedAt || (opts.shouldStop('epoch') && !ranItsEpochs)
        ? 'KILLED'
        : 'FINISHED';
    let artifacts: string[];
    let error = failure;
    try {
      artifacts = await writeOutputs(m, r, history, data, status, backbone.preprocessing);
    } catch (writeError) {
      // Its files could not be written whole (a full disk): the run ends FAILED saying why, with the files that are,
      // and the error stops the group (its other runs write to the same disk) once this run is closed.
      if (!(writeError instanceof DiskFullError)) throw writeError;
      status = 'FAILED';
      error = writeError;
      artifacts = ARTIFACTS.filter((a) => fs.existsSync(path.join(m.runDir, a)));
    }
    // As Keras' BackupAndRestore at the end of training; a pruned run is over too (--resume leaves it).
    if (status === 'FINISHED' || (status !== 'FAILED' && r?.prunedAt)) await removeBackup(m.runDir);
    const wallSeconds = (Date.now() - started) / 1000;
    const ran = { bestEpoch: r?.bestEpoch, result: r?.result, earlyStopping: r?.earlyStopping, prunedAt: r?.prunedAt };
    const end: RunEndInfo = { status, error: error?.message, ...ran, history, artifacts, wallSeconds };
    for (const cb of m.spec.callbacks) await cb.onRunEnd?.(end);
    outcomes[i] = {
      name: m.spec.name,
      runId: m.runId,
      runDir: m.runDir,
      status,
      error: error?.message,
      history,
      ...ran,
      wallSeconds,
      tensorsPerEpoch: r?.tensorsPerEpoch ?? [],
    };
    if (error && !failure) throw error;
  };
  let failure: Error | undefined;
  try {
    await trainGroup(
      members.map((m, i) => ({
        label: trials.length > 1 ? m.spec.name : undefined,
        experiment: m.spec.experiment,
        model: m.model,
        classWeights: m.classWeights,
        tap: m.tap,
        onEpochEnd: async (epoch, logs) => {
          for (const cb of m.spec.callbacks) await cb.onEpochEnd?.(epoch, logs);
        },
        onDone: (r) => endRun(i, r),
        prune: m.spec.prune,
        backupDir: opts.backup ? m.runDir : undefined,
        resume: m.backup,
      })),
      { data, backbone, forward, validationFeatures, progress, shouldStop: opts.shouldStop },
    );
  } catch (error) {
    failure = error as Error;
  } finally {
    forward?.dispose();
  }
  const histories = (failure as { histories?: EpochLogs[][] } | undefined)?.histories;
  for (const i of members.keys()) {
    if (outcomes[i]) continue;
    const trained = histories?.[i]?.length
      ? { history: histories[i], stoppedEarly: false, tensorsPerEpoch: [] }
      : undefined;
    await endRun(i, trained, failure ?? new Error('training ended without this trial'));
  }

  for (const m of models.values()) m.model.optimizer?.dispose();
  // Container.dispose() follows layer reference counts that composing models shifts; freeing the weights
  // themselves is exact. The backbone is shared by every member of the group.
  const weights = new Set([...backbone.model.weights, ...[...models.values()].flatMap((m) => m.head.weights)]);
  for (const w of weights) w.dispose();
  // Every run above has ended (FAILED unless it was done before) before the error surfaces, with the outcomes.
  if (failure) throw Object.assign(failure, { outcomes });
  return { outcomes: outcomes as TrialOutcome[], data };
}

async function writeOutputs(
  m: { runDir: string; full: tf.LayersModel; spec: TrialSpec },
  r: MemberResult | undefined,
  history: EpochLogs[],
  data: PreparedData,
  status: RunEndInfo['status'],
  preprocessing: Backbone['preprocessing'],
): Promise<string[]> {
  writeHistory(m.runDir, history);
  const title = m.spec.name === m.spec.experiment.name ? m.spec.name : `${m.spec.experiment.name}: ${m.spec.name}`;
  if (history.length) await writeCurves(m.runDir, history, title);
  if (r?.result) await writeConfusion(m.runDir, r.result);
  if (status !== 'FAILED' && history.length) {
    await writeSavedModel(m.runDir, m.full, {
      class_names: data.classNames,
      image_size: m.spec.experiment.data.image_size,
      preprocessing,
      interpolation: m.spec.experiment.data.interpolation,
    });
  }
  return ARTIFACTS.filter((a) => fs.existsSync(path.join(m.runDir, a)));
}

function paramCounts(full: tf.LayersModel, head: tf.LayersModel, frozen: boolean) {
  const count = (ws: tf.LayerVariable[]) =>
    ws.reduce((a, w) => a + w.shape.reduce((x: number, y) => x * (y ?? 1), 1), 0);
  const total = count(full.weights);
  return {
    total_params: total,
    trainable_params: frozen ? count(head.trainableWeights) : count(full.trainableWeights),
  };
}
