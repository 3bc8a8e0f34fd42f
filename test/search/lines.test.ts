// What a search prints as each trial ends and at its end, read as a user reads them.
import { describe, expect, it } from 'vitest';
import type { ResolvedTrial } from '../../src/config/load.ts';
import { endLine, trialEndLine } from '../../src/search/lines.ts';
import type { StudySummary } from '../../src/search/search.ts';

const trial = { index: 7, name: 'dropout=0.1 learning_rate=0.001', experiment: { training: { epochs: 3 } } };
const t = trial as unknown as ResolvedTrial;
const result = { val_accuracy: 0.8123, val_loss: 0.4 } as never;
const counts = (complete: number, pruned: number) => ({ complete, pruned, fail: 0, running: 0 });
const summary = (pruned: number[]): StudySummary => ({
  best: { number: 6, index: 7, value: 0.8123, params: { 'head.dropout': 0.1, 'optimizer.learning_rate': 0.001 } },
  files: [],
  skipped: {},
  pruned_epochs: pruned,
});

describe("a search's lines", () => {
  it('says of each trial as it ends its values, the epochs it trained, its metric, and whether it was stopped', () => {
    const history = (n: number) => Array.from({ length: n }, () => ({}));
    expect(trialEndLine(t, { status: 'FINISHED', history: history(3), result }, 'val_accuracy')).toBe(
      'trial 7 ended: dropout=0.1 learning_rate=0.001: 3 of 3 epochs, val_accuracy 0.8123',
    );
    expect(
      trialEndLine(t, { status: 'KILLED', prunedAt: { epoch: 1 }, history: history(1), result }, 'val_accuracy'),
    ).toBe('trial 7 ended: dropout=0.1 learning_rate=0.001: stopped after epoch 1 of 3, val_accuracy 0.8123');
    expect(trialEndLine(t, { status: 'KILLED', history: history(2) }, 'val_accuracy')).toBe(
      'trial 7 ended: dropout=0.1 learning_rate=0.001: interrupted after 2 of 3 epochs (asked again when the search goes on)',
    );
  });

  it('ends with the best of the whole study and how many were stopped after which epochs', () => {
    expect(endLine(summary([1, 3, 1]), counts(45, 3), 'val_accuracy')).toBe(
      'best of 48: trial 7, dropout=0.1 learning_rate=0.001, val_accuracy 0.8123 (3 stopped early, after 1-3 epochs); the study holds 45 finished, 3 stopped, 0 failed',
    );
    expect(endLine(summary([1, 1]), counts(2, 2), 'val_accuracy')).toContain('(2 stopped early, after 1 epoch);');
    expect(endLine(summary([2]), counts(3, 1), 'val_accuracy')).toContain('(1 stopped early, after 2 epochs);');
    expect(endLine(summary([]), counts(4, 0), 'val_accuracy')).toContain('(0 stopped early);');
    expect(endLine({ ...summary([1]), best: null }, counts(0, 1), 'val_accuracy')).toBe(
      'no trial of 1 finished (1 stopped early, after 1 epoch); the study holds 0 finished, 1 stopped, 0 failed',
    );
  });
});
