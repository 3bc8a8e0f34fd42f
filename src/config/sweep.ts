// Expands a sweep into trials: a grid (cartesian product) or seeded random draws.
import { createRng, type Rng } from '../util/random.ts';
import { isMapping } from './mapping.ts';
import { SEARCH_METHODS, type SweepConfig, type SweepDistribution } from './types.ts';
import { metricGoal } from './metrics.ts';

export type Assignment = Record<string, unknown>; // dotted path -> value

export interface Trial {
  index: number; // 1-based
  values: Assignment;
  name: string; // e.g. "dropout=0.2 epochs=10"
}

/** Trials a sweep may have unless the user raises the limit (`--max-trials`): a typo in a grid should not run for weeks. */
export const DEFAULT_MAX_TRIALS = 10_000;

const RESERVED = ['method', 'trials', 'batch', 'early_terminate', 'seed', 'metric', 'goal', 'parameters'];

/** Sweep keys with a dot are parameters; `parameters:` holds the same, W&B style. */
export function normalizeSweep(raw: Record<string, unknown>, defaultSeed: number): SweepConfig {
  const parameters: SweepConfig['parameters'] = { ...((raw.parameters as SweepConfig['parameters']) ?? {}) };
  for (const [k, v] of Object.entries(raw)) if (!RESERVED.includes(k)) parameters[k] = v as unknown[];
  const metric = (raw.metric as string) ?? 'val_accuracy';
  return {
    method: (raw.method as SweepConfig['method']) ?? 'grid',
    trials: raw.trials as number | undefined,
    ...(raw.batch !== undefined ? { batch: raw.batch as SweepConfig['batch'] } : {}),
    ...(raw.early_terminate !== undefined
      ? { early_terminate: raw.early_terminate as SweepConfig['early_terminate'] }
      : {}),
    seed: (raw.seed as number) ?? defaultSeed,
    metric,
    goal: (raw.goal as SweepConfig['goal']) ?? metricGoal(metric),
    parameters,
  };
}

/** How many trials a sweep has, computed without expanding it (a grid's size is the product of its lists'). */
export function countTrials(sweep: SweepConfig): number {
  if (sweep.method !== 'grid') return sweep.trials ?? DEFAULT_RANDOM_TRIALS;
  return Object.entries(sweep.parameters).reduce(
    (n, [key, spec]) => n * (Array.isArray(spec) ? spec.length : gridSizeOf(spec, key)),
    1,
  );
}

const DEFAULT_RANDOM_TRIALS = 10;

/** Whether the sweep is a search: its trials are asked round by round (src/search), not listed here. */
export const isSearch = (sweep: SweepConfig | undefined): boolean =>
  (SEARCH_METHODS as readonly string[]).includes(sweep?.method ?? '');

/**
 * Whether the sweep runs through a study (src/search): a search, or a grid or random sweep with early_terminate,
 * whose listed trials the study's pruner may stop (as W&B's early_terminate does for every method).
 */
export const runsAsSearch = (sweep: SweepConfig | undefined): boolean =>
  isSearch(sweep) || Boolean(sweep?.early_terminate);

/**
 * A list sweep's trials; a search's probes instead: every parameter at its lower bound, then at its upper bound,
 * so that the checks before training see the extremes any asked trial lies between.
 */
export function expandSweep(sweep: SweepConfig): Trial[] {
  const keys = Object.keys(sweep.parameters);
  const assignments = isSearch(sweep)
    ? probeAssignments(sweep, keys)
    : sweep.method === 'random'
      ? randomAssignments(sweep, keys)
      : gridAssignments(sweep, keys);
  return assignments.map((values, i) => ({ index: i + 1, values, name: trialName(values) }));
}

function gridAssignments(sweep: SweepConfig, keys: string[]): Assignment[] {
  let out: Assignment[] = [{}];
  for (const key of keys) {
    const spec = sweep.parameters[key];
    const values = Array.isArray(spec) ? spec : gridValuesOf(spec, key);
    out = out.flatMap((a) => values.map((v) => ({ ...a, [key]: v })));
  }
  return out;
}

function probeAssignments(sweep: SweepConfig, keys: string[]): Assignment[] {
  const bounds = keys.map((k) => boundsOf(sweep.parameters[k], k));
  const at = (end: 0 | 1) => Object.fromEntries(keys.map((k, i) => [k, bounds[i][end]]));
  return JSON.stringify(at(0)) === JSON.stringify(at(1)) ? [at(0)] : [at(0), at(1)];
}

/** The first and last value a parameter can take; a distribution without usable bounds is an error here. */
function boundsOf(spec: unknown[] | SweepDistribution, key: string): [unknown, unknown] {
  if (Array.isArray(spec)) return [spec[0], spec[spec.length - 1]];
  const { distribution, min, max, values } = spec;
  if (distribution === 'choice') {
    if (!values) throw new SweepSpecError(key, 'choice needs values');
    return [values[0], values[values.length - 1]];
  }
  if (min === undefined || max === undefined || !(max >= min))
    throw new SweepSpecError(key, `${distribution} needs min and max, min <= max`);
  if (distribution === 'log_uniform' && min <= 0)
    throw new SweepSpecError(key, `log_uniform needs min > 0 (got ${min})`);
  if (distribution === 'int' && !(Number.isInteger(min) && Number.isInteger(max)))
    throw new SweepSpecError(key, 'int needs integer min and max');
  return [min, max];
}

function gridValuesOf(spec: SweepDistribution, key: string): unknown[] {
  const grid = gridOf(spec, key);
  return Array.isArray(grid) ? grid : Array.from({ length: grid.size }, (_, i) => grid.min + i);
}

function gridSizeOf(spec: SweepDistribution, key: string): number {
  const grid = gridOf(spec, key);
  return Array.isArray(grid) ? grid.length : grid.size;
}

/** What a grid takes of a distribution: choice's values, or a small int range. */
function gridOf(spec: SweepDistribution, key: string): unknown[] | { min: number; size: number } {
  const { distribution, min, max, values } = spec;
  if (distribution === 'choice' && values) return values;
  if (distribution === 'int' && min !== undefined && max !== undefined && max >= min && max - min <= 100)
    return { min, size: max - min + 1 };
  throw new SweepSpecError(
    key,
    `a ${distribution} distribution needs method: random or tpe (grid takes lists, choice or small int ranges)`,
  );
}

function randomAssignments(sweep: SweepConfig, keys: string[]): Assignment[] {
  const rng = createRng(sweep.seed ?? 0);
  const n = sweep.trials ?? DEFAULT_RANDOM_TRIALS;
  return Array.from({ length: n }, () => Object.fromEntries(keys.map((k) => [k, draw(sweep.parameters[k], rng, k)])));
}

function draw(spec: unknown[] | SweepDistribution, rng: Rng, key: string): unknown {
  if (Array.isArray(spec)) return spec[rng.int(0, spec.length - 1)];
  const { distribution, min, max, values } = spec;
  if (distribution === 'choice') {
    if (!values) throw new SweepSpecError(key, 'choice needs values');
    return values[rng.int(0, values.length - 1)];
  }
  if (min === undefined || max === undefined || !(max >= min))
    throw new SweepSpecError(key, `${distribution} needs min <= max`);
  if (distribution === 'uniform') return round(rng.uniform(min, max));
  if (distribution === 'int') return rng.int(min, max);
  if (min <= 0) throw new SweepSpecError(key, 'log_uniform needs min > 0');
  return round(Math.exp(rng.uniform(Math.log(min), Math.log(max))));
}

// Six significant digits keep run names and MLflow params readable.
const round = (x: number) => Number(x.toPrecision(6));

export class SweepSpecError extends Error {
  constructor(
    readonly key: string,
    message: string,
  ) {
    super(message);
  }
}

/** "dropout=0.2 epochs=10": the last path segment, unless two parameters share it. */
export function trialName(values: Assignment): string {
  const keys = Object.keys(values);
  const last = keys.map((k) => k.slice(k.lastIndexOf('.') + 1));
  return keys
    .map((k, i) => `${last.filter((l) => l === last[i]).length > 1 ? k : last[i]}=${format(values[k])}`)
    .join(' ');
}

const format = (v: unknown) => (typeof v === 'string' ? v : JSON.stringify(v));

export function setPath(target: Record<string, unknown>, path: string[], value: unknown): void {
  // Keys are checked when read; this guard keeps a missed one from reaching an object's prototype.
  if (path.some((k) => k === '__proto__' || k === 'constructor' || k === 'prototype'))
    throw new Error(`reserved key in ${path.join('.')}`);
  let node = target;
  for (const k of path.slice(0, -1)) {
    const next = node[k];
    if (isMapping(next)) node = next;
    else {
      const made: Record<string, unknown> = {};
      node[k] = made;
      node = made;
    }
  }
  node[path[path.length - 1]] = value;
}
