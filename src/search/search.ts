// A search yields rounds of trials and takes their results (Optuna's ask and tell): the strategy behind it decides
// what to ask next and which trials to stop. Training knows nothing of it; src/search/run.ts connects the two.
import type { Assignment } from '../config/sweep.ts';

export interface AskedTrial {
  /** The study's trial number (0-based). */
  number: number;
  /** The trial's index in what xp prints and names (1-based): `number + 1` in a search, its place in a listed sweep. */
  index: number;
  values: Assignment;
  /** Asked by an earlier run that was interrupted before telling its result: trained again, not asked anew. */
  again: boolean;
}

export interface StudySummary {
  /** The study's best finished trial (its number, xp's index, value and parameters); none before one finishes. */
  best: { number: number; index: number; value: number; params: Record<string, unknown> } | null;
  /** Files written in the directory: trials.csv, optimization_history.png, param_importances.png. */
  files: string[];
  /** Plots left out, each with why (too few finished trials, or what Optuna said). */
  skipped: Record<string, string>;
  /** The epoch each of the study's stopped trials was stopped after. */
  pruned_epochs: number[];
}

export type TrialResult = { state: 'complete'; value: number } | { state: 'pruned' } | { state: 'fail' };

export interface Search {
  /** Up to `n` trials to train next; none when the study holds its number of trials. */
  ask(n: number): Promise<AskedTrial[]>;
  /** A trial's metric after an epoch: the reason to stop it there, or undefined to go on. */
  report(number: number, epoch: number, value: number): Promise<string | undefined>;
  tell(number: number, result: TrialResult): Promise<void>;
  /** Writes the study's trial table and Optuna's plots into `dir`; its best trial, what was written and what not. */
  summary(dir: string): Promise<StudySummary>;
  /** How many of the study's trials ended which way, this run's and earlier runs'. */
  counts(): Promise<{ complete: number; pruned: number; fail: number; running: number }>;
  close(): Promise<void>;
}
