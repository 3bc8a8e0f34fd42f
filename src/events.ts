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

export interface RunEndInfo {
  status: 'FINISHED' | 'FAILED' | 'KILLED';
  error?: string;
  bestEpoch?: number;
  history: EpochLogs[];
  /** Files and folders under runDir to keep as artifacts (relative paths): experiment.yaml, history.csv, curves.png, model/, summary.txt, confusion_matrix.json */
  artifacts: string[];
  wallSeconds: number;
}

export interface Callbacks {
  onRunStart?(info: RunStartInfo): Promise<void> | void;
  onEpochEnd?(epoch: number, logs: EpochLogs): Promise<void> | void;
  onRunEnd?(info: RunEndInfo): Promise<void> | void;
}
