// The end-of-run lines about a run's figures: the result (the saved model on the whole validation set) first,
// as the run's headline, then the last epoch's and the checkpoint's best epoch's metrics, then what early stopping
// did. The CLI prints them; MLflow logs the same result (final_* metrics).
import { savedWeightsLabel, type EarlyStoppingReport, type EpochLogs, type RunResult } from '../events.ts';

export interface RunFigures {
  history: EpochLogs[];
  bestEpoch?: number;
  result?: RunResult;
  earlyStopping?: EarlyStoppingReport;
}

export function summaryLines(o: RunFigures): string[] {
  const lines: string[] = [];
  const last = o.history.at(-1);
  const r = o.result;
  if (r) {
    lines.push(
      `  result: val_accuracy ${fmt(r.val_accuracy)} - val_loss ${fmt(r.val_loss)} on all ${r.images} validation images, saved weights of ${savedWeightsLabel(r)}`,
    );
    const perClass = Object.entries(r.per_class).map(
      ([name, c]) => `${name} ${fmt(c.precision)}/${fmt(c.recall)}/${fmt(c.f1)} (${c.support})`,
    );
    lines.push(`  per class (precision/recall/f1, images): ${perClass.join(' - ')}`);
  }
  if (last) {
    lines.push(
      `  last epoch: loss ${fmt(last.loss)} - accuracy ${fmt(last.accuracy)} - val_loss ${fmt(last.val_loss)} - val_accuracy ${fmt(last.val_accuracy)} (epoch ${o.history.length})`,
    );
    const best = o.bestEpoch ? o.history[o.bestEpoch - 1] : undefined;
    if (best)
      lines.push(
        `  best epoch: ${o.bestEpoch} - val_accuracy ${fmt(best.val_accuracy)} - val_loss ${fmt(best.val_loss)}`,
      );
  }
  const es = o.earlyStopping;
  if (es && last) {
    const stopped = es.stopped_epoch ? `stopped at epoch ${es.stopped_epoch}` : 'did not stop the run';
    const kept = es.restored_epoch
      ? `restored the weights of epoch ${es.restored_epoch}`
      : `kept the weights of ${r ? savedWeightsLabel(r) : `epoch ${o.history.length}`}`;
    lines.push(
      `  early stopping: ${stopped} (${es.monitor} best ${fmt(es.best_value)} at epoch ${es.best_epoch}, patience ${es.patience}), ${kept}`,
    );
  }
  return lines;
}

const fmt = (v: number | undefined) => (v === undefined ? '-' : v.toFixed(4));
