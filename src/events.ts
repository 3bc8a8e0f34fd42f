// The run-events contract between training and whatever listens (console, MLflow, sweeps): training emits
// these and knows nothing of its listeners; tracking implements Callbacks and knows nothing of training.
import type { Experiment } from './config/types.ts';

export interface EpochLogs {
  loss: number;
  accuracy: number;
  val_loss?: number;
  val_accuracy?: number;
  learning_rate: number;
  epoch_seconds: number;
  images_per_second: number;
}

export interface RunStartInfo {
  runId: string; // xp's local run id, also the folder name under runs/<experiment>/
  runDir: string; // absolute path of runs/<experiment>/<run-id>/
  runName: string; // readable, e.g. "dropout=0.2 epochs=10" for sweep trials
  experiment: Experiment; // resolved, defaults filled in
  sourceFile?: string; // the experiment YAML the user ran
  configHash: string; // sha256 of the resolved experiment (canonical JSON), first 16 hex chars
  parentRunId?: string; // tracker run id of the sweep parent, for trials
  facts: {
    total_params: number;
    trainable_params: number;
    train_images: number;
    validation_images: number;
    class_names: string[];
  };
  datasets: { name: string; digest: string; source: string; context: 'train' | 'eval' }[];
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
  /** Validation images scored: the whole validation set. */
  images: number;
  val_accuracy: number;
  val_loss: number;
  per_class: Record<string, ClassScores>;
  /** Rows true class, columns predicted class, in class_names order. */
  confusion: number[][];
  class_names: string[];
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
