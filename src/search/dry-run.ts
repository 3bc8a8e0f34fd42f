// What `xp run --dry-run` says of a sweep that runs through a study: the round size and why, the rungs (or
// Hyperband's brackets) its pruner stops trials at, the most trial-epochs it can cost, and where its study lives.
// Nothing is asked or trained, and TensorFlow is not loaded: the backbone's feature shape comes from its topology.
import type { LoadedExperiment } from '../config/load.ts';
import type { EarlyTerminateConfig, Experiment, SweepConfig } from '../config/types.ts';
import { KERAS_TOP, kerasArchitecture } from '../model/layers.ts';
import { inspectTfjsModel } from '../model/tfjs-model.ts';
import { cutTopology } from '../model/topology.ts';
import { outputShape } from '../model/weight-shapes.ts';
import { availableBytes, headBytes, roundSize } from './batch.ts';
import { studyPlace } from './run.ts';

/** A search's plan: it asks its trials as it goes, so there is no list to show. */
export async function searchPlan(file: string, loaded: LoadedExperiment, sweep: SweepConfig): Promise<string[]> {
  const trials = sweep.trials ?? 10;
  return [
    `${file}: a ${sweep.method} search of ${trials} trials by ${sweep.metric}`,
    `  parameters: ${Object.keys(sweep.parameters).join(', ')}`,
    ...(await studyPlan(loaded, sweep, trials)),
  ];
}

/** Rounds, rungs, cost and study of a sweep that runs through a study (a listed sweep with early_terminate too). */
export async function studyPlan(
  loaded: LoadedExperiment,
  sweep: SweepConfig,
  trials = loaded.trials.length,
): Promise<string[]> {
  const epochs = loaded.base.training.epochs;
  const lines = [await roundLine(loaded, sweep, trials)];
  if (sweep.early_terminate) lines.push(...stoppingLines(sweep.early_terminate, epochs));
  lines.push(`  at most ${trials * epochs} trial-epochs (${trials} trials x ${epochs} epochs, if none is stopped)`);
  lines.push(`  study: ${studyPlace(loaded).file} (running the file again continues it)`);
  return lines;
}

/** The round size as the run will compute it, with the figures it comes from. */
async function roundLine(loaded: LoadedExperiment, sweep: SweepConfig, trials: number): Promise<string> {
  if (typeof sweep.batch === 'number') {
    const { batch, why } = roundSize(sweep, 0, trials);
    return `  rounds of ${batch} trial(s): ${why}`;
  }
  // The largest head the sweep can ask for: each parameter at its bounds (a search's probes), or every listed trial.
  const sizes = await Promise.all(loaded.trials.map((t) => headSize(t.experiment)));
  if (sizes.some((s) => s === undefined))
    return "  rounds: auto, computed from memory when it runs (the backbone's feature shape is not known before it is built)";
  const { batch, why } = roundSize(sweep, Math.max(...(sizes as number[])), trials, availableBytes());
  return `  rounds of ${batch} trial(s) now: ${why}`;
}

/** Bytes a trial's head holds while training, from the cut backbone's topology; undefined where it is not known. */
async function headSize(e: Experiment): Promise<number | undefined> {
  const { backbone, data } = e;
  try {
    const topology = /\.json$/i.test(backbone.weights)
      ? (await inspectTfjsModel(backbone.weights)).topology
      : kerasArchitecture(backbone.name);
    const sized = cutTopology(topology, backbone.cut_layer ?? KERAS_TOP[backbone.name], data.image_size);
    const shape = sized && outputShape(sized);
    if (!shape?.every((d): d is number => typeof d === 'number')) return undefined;
    return headBytes(shape, e.head, e.optimizer);
  } catch {
    return undefined;
  }
}

/**
 * Where the pruner decides, as Optuna's pruners do: successive halving's rungs at min_epochs x eta^k epochs;
 * Hyperband's brackets, each successive halving starting one rung later (floor(log_eta(epochs / min_epochs)) + 1 of
 * them); the median rule after every epoch from min_epochs.
 */
export function stoppingLines(stop: EarlyTerminateConfig, epochs: number): string[] {
  const rungs = (from: number) => {
    const out = [];
    for (let r = from; r < epochs; r *= stop.eta) out.push(r);
    return out;
  };
  if (stop.type === 'median')
    return [
      `  early_terminate median: after each epoch from ${stop.min_epochs} to ${epochs - 1}, a trial below the median of the finished trials at that epoch stops`,
    ];
  if (stop.type === 'asha')
    return [
      `  early_terminate asha: rungs after epoch ${rungs(stop.min_epochs).join(', ')}; the top 1/${stop.eta} of a rung's trials go on`,
    ];
  const brackets = Math.floor(Math.log(epochs / stop.min_epochs) / Math.log(stop.eta) + 1e-9) + 1;
  return [
    `  early_terminate hyperband: ${brackets} bracket(s), trials spread over them; the top 1/${stop.eta} of a rung's trials go on`,
    ...Array.from({ length: brackets }, (_, s) => {
      const at = rungs(stop.min_epochs * stop.eta ** s);
      return `    bracket ${s + 1}: ${at.length ? `rungs after epoch ${at.join(', ')}` : 'no rung: its trials train every epoch'}`;
    }),
  ];
}
