// What the trials of a sweep can share (no TensorFlow here: `xp run --dry-run` shows it without loading it).
// A group trains in one process on one backbone pass; within a group, trials equal but for their epochs share
// their training too, the shorter being the longer one's prefix.
import { configHash, type ResolvedTrial } from '../config/load.ts';
import type { Experiment } from '../config/types.ts';

/** Trials that differ only in head, optimizer or epochs (same data, backbone, augmentation, seed) share a pass. */
export function groupTrials(trials: ResolvedTrial[], share: boolean): ResolvedTrial[][] {
  const groups = new Map<string, ResolvedTrial[]>();
  for (const t of trials) {
    const e = t.experiment;
    const fineTuned = e.backbone.trainable || e.backbone.trainable_from !== undefined;
    const key = share && !fineTuned ? JSON.stringify(sharedPart(e)) : `${t.index}`;
    groups.set(key, [...(groups.get(key) ?? []), t]);
  }
  return [...groups.values()];
}

function sharedPart(e: Experiment) {
  const { steps_per_epoch, validation_steps, seed } = e.training;
  return { data: e.data, backbone: e.backbone, augmentation: e.augmentation, steps_per_epoch, validation_steps, seed };
}

/**
 * For each experiment, the index of the one that trains for it: experiments equal but for their epochs follow one
 * trajectory, and the longest of them trains (itself, when no other matches).
 */
export function trainersOf(experiments: Experiment[]): number[] {
  // A cosine schedule decays over all the epochs: a shorter run's rates are not a longer one's first.
  const keys = experiments.map((e) =>
    configHash({
      ...e,
      training: { ...e.training, epochs: e.optimizer.schedule?.type === 'cosine' ? e.training.epochs : 0 },
    }),
  );
  const epochs = (i: number) => experiments[i].training.epochs;
  // The first of the longest with the same key.
  return keys.map((key) =>
    keys.reduce((best, other, j) => (other === key && epochs(j) > epochs(best) ? j : best), keys.indexOf(key)),
  );
}

/**
 * Whether a trial trained as another's first epochs can use that one's model when its own last epoch ends,
 * holding no weights of its own: yes unless it restores best weights at its end (then it keeps a copy).
 */
export function usesTrainerModel(e: Experiment): boolean {
  return !e.training.checkpoint.save_best_only && !e.training.early_stopping?.restore_best_weights;
}
