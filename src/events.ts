// The run-events contract between training and whatever listens (console, MLflow, sweeps): training emits
// these and knows nothing of its listeners; tracking implements Callbacks and knows nothing of training.
import type { Experiment } from './config/types.ts';

export interface EpochLogs {
  loss: number;
  accuracy: number;
  val_loss?: number;
  val_accuracy?: number;
  /** training.metrics, on the training batches and on validation (Keras' names); present when asked for. */
  auc?: number;
  val_auc?: number;
  precision?: number;
  val_precision?: number;
  recall?: number;
  val_recall?: number;
  top_k_accuracy?: number;
  val_top_k_accuracy?: number;
  learning_rate: number;
  epoch_seconds: number;
  images_per_second: number;
}

/** The fields of EpochLogs, in the order the history file and MLflow list them. */
export const EPOCH_METRICS = [
  'loss',
  'accuracy',
  'val_loss',
  'val_accuracy',
  'auc',
  'val_auc',
  'precision',
  'val_precision',
  'recall',
  'val_recall',
  'top_k_accuracy',
  'val_top_k_accuracy',
  'learning_rate',
  'epoch_seconds',
  'images_per_second',
] as const satisfies readonly (keyof EpochLogs)[];

export interface RunStartInfo {
  runId: string; // xp's local run id, also the folder name under runs/<experiment>/
  runDir: string; // absolute path of runs/<experiment>/<run-id>/
  runName: string; // readable, e.g. "dropout=0.2 epochs=10" for sweep trials
  experiment: Experiment; // resolved, defaults filled in
  sourceFile?: string; // the experiment YAML the user ran: a path or a URL
  /** The files the experiment was composed of: the experiment first, then the files it extends in the order merged. */
  sources?: { spec: string; sha256: string; remote: boolean }[];
  configHash: string; // sha256 of the resolved experiment (canonical JSON), first 16 hex chars
  parentRunId?: string; // tracker run id of the sweep parent, for trials
  /** Epochs an interrupted run had done when this one resumes it (same runId and runDir): continue its tracked run. */
  resumedAt?: number;
  /** The metrics of those epochs, for a listener that did not see them (a run tracked only from its resumption). */
  resumedHistory?: EpochLogs[];
  facts: {
    total_params: number;
    trainable_params: number;
    train_images: number;
    validation_images: number;
    class_names: string[];
  };
  datasets: { name: string; digest: string; source: string; context: 'train' | 'eval' }[];
  /** How the run trains: the acceleration policy's name (native, xla or plain), logged as the xp.accel tag. */
  accel: string;
}

/** Precision, recall and F1 of one class, and its number of validation images (support). */
export interface ClassScores {
  precision: number;
  recall: number;
  f1: number;
  support: number;
}

/**
 * The run's result: the saved model (restored best weights if any) scored on the whole validation set in one
 * pass. Its figures are the run's headline; per-epoch metrics may have validated on part of the set.
 */
export interface RunResult {
  /** The epoch whose weights were saved (1-based). */
  epoch: number;
  /**
   * Set when those are the weights of an epoch an interruption cut short (no backup held the last whole epoch's
   * weights): the model saved had trained this many steps of `epoch`.
   */
  interrupted_after_step?: number;
  /** Validation images scored: the whole validation set. */
  images: number;
  val_accuracy: number;
  val_loss: number;
  per_class: Record<string, ClassScores>;
  /** Rows true class, columns predicted class, in class_names order. */
  confusion: number[][];
  class_names: string[];
}

/** Which weights a result is of, in words: `epoch 3`, or `epoch 2, interrupted after step 37`. */
export function savedWeightsLabel(r: Pick<RunResult, 'epoch' | 'interrupted_after_step'>): string {
  return `epoch ${r.epoch}${r.interrupted_after_step ? `, interrupted after step ${r.interrupted_after_step}` : ''}`;
}

/** What early stopping did (Keras EarlyStopping): epochs are 1-based. */
export interface EarlyStoppingReport {
  monitor: string;
  patience: number;
  min_delta: number;
  /** The epoch it stopped training at; undefined when the run went to its last epoch. */
  stopped_epoch?: number;
  best_value: number;
  best_epoch: number;
  /** The epoch whose weights were restored (restore_best_weights); undefined when the last weights were kept. */
  restored_epoch?: number;
}

export interface RunEndInfo {
  status: 'FINISHED' | 'FAILED' | 'KILLED';
  error?: string;
  /** A search's pruner stopped the run after this epoch (it ends KILLED, tagged xp.pruned_at_epoch). */
  prunedAt?: { epoch: number; reason: string };
  bestEpoch?: number;
  /** The saved model on the whole validation set; absent when nothing was trained. */
  result?: RunResult;
  earlyStopping?: EarlyStoppingReport;
  history: EpochLogs[];
  /** Files and folders under runDir to keep as artifacts (relative paths): experiment.yaml, history.csv, curves.png, model/, summary.txt, confusion_matrix.json, confusion_matrix.png, result.json */
  artifacts: string[];
  wallSeconds: number;
}

export interface Callbacks {
  onRunStart?(info: RunStartInfo): Promise<void> | void;
  onEpochEnd?(epoch: number, logs: EpochLogs): Promise<void> | void;
  onRunEnd?(info: RunEndInfo): Promise<void> | void;
}

// A run's figure for a metric, defined once: for the metrics its result covers (val_accuracy, val_loss), the
// result, that is the saved model scored on the whole validation set; for any other, the last epoch's value.
// The summary, a sweep's best trial and `xp runs` all rank by it.
const RESULT_METRICS = ['val_accuracy', 'val_loss'] as const;

/** The MLflow metric that holds a run's result for `metric` (final_val_accuracy, ...), or undefined. */
export function resultMetricKey(metric: string): string | undefined {
  return (RESULT_METRICS as readonly string[]).includes(metric) ? `final_${metric}` : undefined;
}

export function headlineValue(run: { history: EpochLogs[]; result?: RunResult }, metric: string): number | undefined {
  const figures: Record<string, unknown> | undefined =
    resultMetricKey(metric) && run.result ? { ...run.result } : { ...run.history.at(-1) };
  const value = figures?.[metric];
  return typeof value === 'number' && Number.isFinite(value) ? value : undefined;
}

/** The same figure for a run read back from MLflow (its metrics' latest values). */
export function loggedHeadlineValue(metrics: Record<string, number>, metric: string): number | undefined {
  const key = resultMetricKey(metric);
  const value = key !== undefined && Number.isFinite(metrics[key]) ? metrics[key] : metrics[metric];
  return Number.isFinite(value) ? value : undefined;
}

/**
 * Asked by training at each step (`step`) and before each epoch (`epoch`): true stops there. A Ctrl-C stops at the
 * next step; a queue worker told to stop finishes its epoch first. Either way the run ends KILLED, resumable.
 */
export type StopCheck = (at: 'step' | 'epoch') => boolean;

/** Asked after an epoch of a search's trial: the reason its pruner stops it there, or undefined to go on. */
export type PruneCheck = (epoch: number, logs: EpochLogs) => Promise<string | undefined>;
