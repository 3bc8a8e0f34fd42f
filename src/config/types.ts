// Types of a resolved experiment: every default filled in, mirrors schema/experiment.schema.json.
// test/schema-types.test.ts checks that the two agree.

export const BACKBONE_NAMES = ['inception_v3', 'mobilenet_v2'] as const;
export const POOLINGS = ['flatten', 'avg', 'max'] as const;
export const HEAD_ACTIVATIONS = [
  'relu',
  'elu',
  'selu',
  'tanh',
  'sigmoid',
  'linear',
  'relu6',
  'softplus',
  'swish',
  'gelu',
] as const;
export const OPTIMIZERS = ['rmsprop', 'adam', 'sgd', 'adagrad'] as const;
export const SCHEDULE_TYPES = ['cosine', 'exponential', 'piecewise', 'plateau'] as const;
/** The fields of each schedule type (besides `type`): Keras' arguments, in epochs where Keras counts steps. */
export const SCHEDULE_FIELDS = {
  cosine: ['warmup_epochs', 'warmup_target', 'alpha'],
  exponential: ['decay_rate', 'decay_epochs', 'staircase'],
  piecewise: ['boundaries', 'values'],
  plateau: ['monitor', 'factor', 'patience', 'min_delta', 'min_lr', 'cooldown'],
} as const satisfies Record<ScheduleType, readonly (keyof ScheduleConfig)[]>;
export const FILL_MODES = ['nearest', 'constant', 'reflect', 'wrap'] as const;
export const INTERPOLATIONS = ['nearest', 'bilinear', 'bicubic'] as const;
export const CLASS_MODES = ['auto', 'binary', 'categorical'] as const;
export const PREPROCESSINGS = ['auto', 'rescale', 'inception', 'none'] as const;
/** training.metrics: computed on training and validation each epoch besides loss and accuracy (Keras' definitions). */
export const EXTRA_METRICS = ['auc', 'precision', 'recall', 'top_k_accuracy'] as const;

export type BackboneName = (typeof BACKBONE_NAMES)[number];
export type Pooling = (typeof POOLINGS)[number];
export type HeadActivation = (typeof HEAD_ACTIVATIONS)[number];
export type OptimizerName = (typeof OPTIMIZERS)[number];
export type ScheduleType = (typeof SCHEDULE_TYPES)[number];
export type FillMode = (typeof FILL_MODES)[number];
export type Interpolation = (typeof INTERPOLATIONS)[number];
export type ClassMode = (typeof CLASS_MODES)[number];
export type ExtraMetric = (typeof EXTRA_METRICS)[number];
/** rescale: x/255 -> [0,1]; inception: x/127.5-1 -> [-1,1]; none: raw 0..255; auto: what the weights expect. */
export type Preprocessing = (typeof PREPROCESSINGS)[number];

export interface DataConfig {
  url?: string;
  sha256?: string;
  train: string;
  validation: string;
  image_size: [number, number]; // [height, width]
  batch_size: number;
  class_mode: ClassMode;
  interpolation: Interpolation;
  /** Train on at most this many images per class (first by name); validation always uses every image. */
  max_per_class?: number;
  /** Follow symbolic links inside the image folders (Keras follow_links); never into a loop. Absent means false, so
   * that config hashes of existing runs stay the same. */
  follow_links?: boolean;
}

export interface BackboneConfig {
  name: BackboneName;
  /** 'nsfwjs' | 'imagenet' | a path to a Keras .h5 weights file or a tfjs model.json */
  weights: string;
  cut_layer: string;
  trainable: boolean;
  trainable_from?: string;
  preprocessing: Preprocessing;
}

export interface HeadConfig {
  pooling: Pooling;
  units: number[];
  activation: HeadActivation;
  dropout: number;
}

export interface AugmentationConfig {
  rotation_range: number;
  width_shift_range: number;
  height_shift_range: number;
  shear_range: number;
  zoom_range: number | [number, number];
  horizontal_flip: boolean;
  vertical_flip: boolean;
  fill_mode: FillMode;
  cval: number;
  brightness_range?: [number, number];
}

export interface OptimizerConfig {
  name: OptimizerName;
  learning_rate: number;
  momentum?: number;
  nesterov?: boolean;
  rho?: number;
  epsilon?: number;
  beta_1?: number;
  beta_2?: number;
  /** The learning rate per step (Keras' LearningRateSchedule) or per epoch (ReduceLROnPlateau); absent: constant. */
  schedule?: ScheduleConfig;
}

/** One mapping for every type; SCHEDULE_FIELDS says which fields each type takes (recipe-checks.ts). */
export interface ScheduleConfig {
  type: ScheduleType;
  warmup_epochs?: number;
  warmup_target?: number;
  alpha?: number;
  decay_rate?: number;
  decay_epochs?: number;
  staircase?: boolean;
  boundaries?: number[];
  values?: number[];
  monitor?: string;
  factor?: number;
  patience?: number;
  min_delta?: number;
  min_lr?: number;
  cooldown?: number;
}

export interface EarlyStoppingConfig {
  monitor: string;
  patience: number;
  min_delta: number;
  mode: 'auto' | 'min' | 'max';
  restore_best_weights: boolean;
}

export interface TrainingConfig {
  epochs: number;
  steps_per_epoch?: number;
  validation_steps?: number;
  seed: number;
  /** Keras' fit(class_weight=...): balanced, or class folder name -> weight. */
  class_weight?: 'balanced' | Record<string, number>;
  /** Keras' label_smoothing of the cross-entropy; absent means 0 (config hashes of existing runs stay the same). */
  label_smoothing?: number;
  /** Metrics besides loss and accuracy, each logged as <name> and val_<name>. */
  metrics?: ExtraMetric[];
  /** k of top_k_accuracy (Keras' default 5). */
  top_k?: number;
  early_stopping?: EarlyStoppingConfig;
  checkpoint: { monitor: string; save_best_only: boolean };
}

export type SweepValues = unknown[];
export interface SweepDistribution {
  distribution: 'uniform' | 'log_uniform' | 'int' | 'choice';
  min?: number;
  max?: number;
  values?: unknown[];
}
export const SWEEP_METHODS = ['grid', 'random', 'tpe', 'cmaes'] as const;
export const EARLY_TERMINATE_TYPES = ['asha', 'hyperband', 'median'] as const;
/** Methods that ask each round of trials from the results so far (a search) instead of listing them up front. */
export const SEARCH_METHODS = ['tpe', 'cmaes'] as const;
export type SweepMethod = (typeof SWEEP_METHODS)[number];
export interface EarlyTerminateConfig {
  type: (typeof EARLY_TERMINATE_TYPES)[number];
  min_epochs: number;
  eta: number;
}
export interface SweepConfig {
  method: SweepMethod;
  trials?: number;
  /** Trials asked per round of a search; auto: as many as fit in memory. */
  batch?: number | 'auto';
  early_terminate?: EarlyTerminateConfig;
  seed?: number;
  metric: string;
  goal: 'maximize' | 'minimize';
  parameters: Record<string, SweepValues | SweepDistribution>;
}

export interface TrackingConfig {
  enabled: boolean;
  uri?: string;
  experiment_name?: string;
  register?: string;
}

export interface Experiment {
  name: string;
  description?: string;
  data: DataConfig;
  backbone: BackboneConfig;
  head: HeadConfig;
  augmentation: AugmentationConfig;
  optimizer: OptimizerConfig;
  training: TrainingConfig;
  sweep?: SweepConfig;
  tracking: TrackingConfig;
}
