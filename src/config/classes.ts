// What the classes of the data decide in the training section: top_k_accuracy's k, and training.class_weight turned
// into one weight per class, as Keras' fit(class_weight=...) takes it: `balanced` is
// scikit-learn's and Keras' n_samples / (n_classes * count of the class); a mapping names classes by their folder,
// and a class it leaves out weighs 1. Checked the same way by `xp check` (with the folders' classes) and training.
import type { TrainingConfig } from './types.ts';
import { didYouMean } from './problems.ts';
import { ConfigError } from '../errors.ts';

/** Why the mapping cannot apply to these classes (a name that is no class), or undefined. */
export function classWeightProblem(cfg: TrainingConfig['class_weight'], classNames: string[]): string | undefined {
  if (cfg === undefined || cfg === 'balanced') return undefined;
  const unknown = Object.keys(cfg).filter((name) => !classNames.includes(name));
  if (!unknown.length) return undefined;
  const [first] = unknown;
  const which = unknown.map((n) => `"${n}"`).join(', ');
  return `training.class_weight names ${unknown.length > 1 ? 'classes' : 'a class'} the data does not have: ${which}${unknown.length === 1 ? didYouMean(first, classNames) : ''}; the classes are ${classNames.join(', ')}`;
}

/** Why top_k_accuracy cannot be computed for these classes, or undefined. */
export function topKProblem(k: number | undefined, classNames: string[]): string | undefined {
  if (classNames.length <= 2)
    return `training.metrics: top_k_accuracy needs more than two classes (the data has ${classNames.join(' and ')}, one sigmoid output); use auc, precision or recall`;
  const given = k ?? 5;
  if (given >= classNames.length)
    return `training.metrics: top_k_accuracy with top_k ${given}${k === undefined ? " (Keras' default)" : ''} is always 1 with ${classNames.length} classes; set training.top_k below ${classNames.length}`;
  return undefined;
}

/** One weight per class in class order, from the training labels' counts; undefined without class_weight. */
export function classWeights(
  cfg: TrainingConfig['class_weight'],
  classNames: string[],
  labels: ArrayLike<number>,
): number[] | undefined {
  if (cfg === undefined) return undefined;
  if (cfg !== 'balanced') {
    const problem = classWeightProblem(cfg, classNames);
    if (problem) throw new ConfigError(problem);
    return classNames.map((name) => cfg[name] ?? 1);
  }
  const counts = new Array<number>(classNames.length).fill(0);
  for (let i = 0; i < labels.length; i++) counts[labels[i]]++;
  return counts.map((count) => labels.length / (classNames.length * count));
}
