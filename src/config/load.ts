// The one load pipeline: compose the file and the files it extends (compose.ts, each keeping its positions) ->
// apply --set/--sweep -> resolve paths against the file that wrote them -> expand the sweep -> defaults + schema per
// trial -> cross-field checks -> frozen, resolved experiments, with the files they came from.
import crypto from 'node:crypto';
import { isMapping } from './mapping.ts';
import type { Experiment, SweepConfig } from './types.ts';
import { ConfigProblems, didYouMean, formatPlace, type Problem } from './problems.ts';
import { isKnownField, knownFields, validate, type FieldProblem } from './validate.ts';
import {
  countTrials,
  DEFAULT_MAX_TRIALS,
  expandSweep,
  normalizeSweep,
  setPath,
  SweepSpecError,
  trialName,
  type Assignment,
} from './sweep.ts';
import { ConfigError } from '../errors.ts';
import { crossChecks, type DataFacts, type LayerFacts } from './cross-checks.ts';
import { compose, type FieldPath } from './compose.ts';
import { applyOverrides, flagText, overrideAt, parseOverrides, type Override } from './overrides.ts';
import { resolvePaths } from './resolve-paths.ts';
import { recipeChecks } from './recipe-checks.ts';

export interface LoadOptions {
  /** `key=value` overrides (Hydra style), values parsed as YAML; a swept field set here is pinned. */
  set?: string[];
  /** `key=a,b,c`: adds a swept field. */
  sweep?: string[];
  /** Check weights files, data folders and (with `layers`) cut layers (default true). */
  deep?: boolean;
  /** Where layer names come from, for cut_layer and trainable_from; without it those two are not checked. */
  layers?: LayerFacts;
  /** How class folders are looked into; without it only their existence is checked. */
  data?: DataFacts;
  /** Refuse sweeps with more trials than this (default DEFAULT_MAX_TRIALS). */
  maxTrials?: number;
  /** Fetch remote files again instead of using the cache (--reload). */
  reload?: boolean;
  /**
   * Called with the resolved trials and the files they came from before any data folder or weights file is looked
   * at (the permission check of files from the web); throws to stop.
   */
  permit?: (sources: readonly ExperimentSource[], trials: readonly ResolvedTrial[]) => Promise<void>;
}

export interface ResolvedTrial {
  index: number;
  name: string; // readable, e.g. "dropout=0.2 epochs=10", or the experiment's name
  values: Assignment;
  experiment: Experiment;
  configHash: string;
}

/** One file the experiment was composed of: a local path or a URL, and the sha256 of its bytes. */
export interface ExperimentSource {
  /** The absolute path of a local file, or the URL of a fetched one. */
  spec: string;
  url?: string;
  sha256: string;
  remote: boolean;
}

export interface LoadedExperiment {
  /** The experiment as given on the command line: a path or a URL. */
  file: string;
  /** The experiment file first, then its bases (`extends`) in the order merged. */
  sources: ExperimentSource[];
  /** Where the value at a field path of the resolved experiment came from (for `xp config --origins`). */
  origin(path: FieldPath): string;
  /** The experiment without sweep values applied (what a sweep's parent run records). */
  base: Experiment;
  /** The `--set` flags that pinned a field the file sweeps (the sweep shrank by it). */
  pinned: string[];
  sweep?: SweepConfig;
  trials: ResolvedTrial[];
}

export async function loadExperiment(file: string, opts: LoadOptions = {}): Promise<LoadedExperiment> {
  const { overrides, problems: flagProblems } = parseOverrides(opts.set, opts.sweep);
  if (flagProblems.length) throw new ConfigProblems(flagProblems);
  const source = await compose(file, { reload: opts.reload });
  const problems: Problem[] = [];
  // A problem in a value given on the command line is reported under its flag, not at the file's line.
  // `sweepKey`: the problem is about that sweep parameter, which --sweep may have given.
  const sweepFromFlagsOnly = !('sweep' in source.value);
  const at = (p: FieldProblem, prefix = '', sweepKey?: (string | number)[]) => {
    if (sweepKey?.[0] === 'sweep' && sweepFromFlagsOnly)
      return void problems.push({ file: '--sweep', message: prefix + p.message });
    const o = sweepKey ? overrideAt(overrides, sweepKey) : overrideAt(overrides, p.path, '--set');
    problems.push(
      o
        ? { file: flagText(o.flag, o.arg), message: prefix + p.message }
        : { ...source.position(p.path, p.atKey), message: prefix + p.message },
    );
  };

  const raw = source.value as Record<string, unknown>;
  const pinned = applyOverrides(raw, overrides);
  // Paths are resolved against the file that wrote them (or the current folder for flags), once.
  const writtenIn = (p: FieldPath) =>
    overrideAt(overrides, p[0] === 'sweep' ? sweptKey(p) : p, p[0] === 'sweep' ? '--sweep' : '--set')
      ? undefined
      : source.writer(p);
  for (const p of resolvePaths(raw, writtenIn)) at(p, '', p.path[0] === 'sweep' ? sweptKey(p.path) : undefined);
  // A path left unresolved is not looked at, but the schema still checks every field.
  const unresolvedPaths = problems.length > 0;
  const sweepRaw = raw.sweep as Record<string, unknown> | undefined;
  delete raw.sweep;

  // The base experiment (no sweep values) must be valid on its own, except for fields only the sweep sets.
  const base = structuredClone(raw);
  const baseProblems = validate(base);
  let sweep: SweepConfig | undefined;
  let assignments: { index: number; name: string; values: Assignment }[] = [
    { index: 1, name: String(raw.name ?? ''), values: {} },
  ];
  if (sweepRaw) {
    const sweepProblems = validate({ ...minimalExperiment(), sweep: sweepRaw });
    for (const p of sweepProblems) at(p, '', sweepFlagPath(p.path));
    const { training } = base;
    const seed = typeof training === 'object' && training !== null && 'seed' in training ? training.seed : undefined;
    sweep = normalizeSweep(sweepRaw, typeof seed === 'number' ? seed : 42);
    for (const key of Object.keys(sweep.parameters)) {
      if (key.startsWith('sweep.') || !isKnownField(key.split('.'))) {
        at(
          {
            path: sweepKeyPath(sweepRaw, key),
            atKey: true,
            message: `sweep parameter ${key} is not a known field${didYouMean(key, knownFields())}`,
          },
          '',
          key.split('.'),
        );
      }
    }
    if (!sweepProblems.length) for (const p of searchProblems(sweep, sweepRaw, base)) at(p, '', ['sweep']);
    if (!sweepProblems.length)
      assignments = expandWithinLimit(sweep, sweepRaw, opts.maxTrials ?? DEFAULT_MAX_TRIALS, at) ?? assignments;
  }
  const swept = new Set(sweep ? Object.keys(sweep.parameters) : []);
  for (const p of baseProblems) {
    // "x is required" on the base is fine when the sweep provides x.
    if (p.message.endsWith(' is required') && swept.has(p.message.replace(/ is required$/, ''))) continue;
    at(p);
  }
  const baseFailed = problems.length > 0;

  const trials: ResolvedTrial[] = [];
  // Trials whose data and backbone sections are valid: their folders and layers can be checked whatever else fails.
  const crossCheckable: ResolvedTrial[] = [];
  for (const a of assignments) {
    const experiment = structuredClone(raw);
    for (const [key, value] of Object.entries(a.values)) setPath(experiment, key.split('.'), value);
    const trialProblems = validate(experiment);
    for (const p of trialProblems) {
      const key = Object.keys(a.values).find((k) => p.path.join('.').startsWith(k));
      if (key && sweepRaw) at({ path: sweepKeyPath(sweepRaw, key), message: p.message }, prefix(a), key.split('.'));
      else if (!baseFailed) at(p, sweep ? prefix(a) : ''); // else reported once, on the base, above
    }
    if (sweep) experiment.sweep = sweep;
    // An experiment once the schema passes; until then only its valid sections are read (by the cross-field checks).
    const checked = experiment as Partial<Experiment> as Experiment;
    if (!trialProblems.length) for (const p of recipeChecks(checked)) at(p, sweep ? prefix(a) : '');
    const trial = {
      ...a,
      name: sweep ? a.name : String(experiment.name),
      experiment: deepFreeze(checked),
      configHash: configHash(checked),
    };
    if (!trialProblems.length) trials.push(trial);
    if (!trialProblems.some(touchesCrossChecks)) crossCheckable.push(trial);
  }

  const sources = dedupeSources([source.top, ...source.merged.slice(0, -1)]);
  const crossCheck = async (list: ResolvedTrial[]) => {
    for (const t of dedupeForChecks(list)) {
      for (const p of await crossChecks(t.experiment, { layers: opts.layers, data: opts.data }))
        at(p, sweep ? `trial ${t.index} (${t.name}): ` : '');
    }
  };
  if (problems.length) {
    // One pass: the folders and layers of the valid sections are checked too, except in a file from the web, which
    // may reach no folder or weights file before the sandbox has allowed it (and it is not asked for a broken file).
    if (opts.deep !== false && !unresolvedPaths && !sources.some((s) => s.remote)) await crossCheck(crossCheckable);
    throw new ConfigProblems(problems);
  }
  await opts.permit?.(sources, trials);
  if (opts.deep !== false) {
    await crossCheck(trials);
    if (problems.length) throw new ConfigProblems(problems);
  }
  // Defaults filled in the base too: an experiment then, but for required fields that only its sweep sets.
  validate(base);
  if (sweep) base.sweep = sweep;
  return {
    file,
    sources,
    origin: originOf(source, overrides, sweepRaw),
    base: deepFreeze(base as Partial<Experiment> as Experiment),
    pinned,
    sweep,
    trials,
  };
}

// `sweep.<key>` or `sweep.parameters.<key>...`: the field path <key> that --sweep gives.
function sweptKey(p: FieldPath): string[] {
  const key = p[1] === 'parameters' ? p[2] : p[1];
  return key === undefined ? [] : String(key).split('.');
}

function dedupeSources(files: { spec: string; remote: boolean; sha256: string }[]): ExperimentSource[] {
  const seen = new Set<string>();
  return files.flatMap((f) => {
    if (seen.has(f.spec)) return [];
    seen.add(f.spec);
    return [{ spec: f.spec, ...(f.remote ? { url: f.spec } : {}), sha256: f.sha256, remote: f.remote }];
  });
}

// A value of the resolved experiment came from a flag, a file (the last one merged that wrote it), or the schema's
// defaults. The sweep is normalized (its parameters under sweep.parameters): they are looked up where written.
function originOf(
  source: Awaited<ReturnType<typeof compose>>,
  overrides: Override[],
  sweepRaw: Record<string, unknown> | undefined,
) {
  return (p: FieldPath): string => {
    let at = p;
    if (p[0] === 'sweep') {
      const key = p[1] === 'parameters' ? p[2] : undefined;
      const o = key === undefined ? undefined : overrideAt(overrides, String(key).split('.'), '--sweep');
      if (o) return flagText(o.flag, o.arg);
      if (key !== undefined && sweepRaw && String(key) in sweepRaw) at = ['sweep', key, ...p.slice(3)];
    } else {
      const o = overrideAt(overrides, p, '--set');
      if (o) return flagText(o.flag, o.arg);
    }
    const f = source.writtenBy(at);
    return f ? formatPlace({ file: f.name, ...f.source.position(at), via: f.via }) : 'default';
  };
}

// The grid's size is known from its list lengths: refuse a huge one before building any trial.
function expandWithinLimit(
  sweep: SweepConfig,
  sweepRaw: Record<string, unknown>,
  limit: number,
  at: (p: FieldProblem, prefix?: string, sweepKey?: (string | number)[]) => void,
): { index: number; name: string; values: Assignment }[] | undefined {
  try {
    const count = countTrials(sweep);
    if (count > limit) {
      const size = Number.isFinite(count) ? count.toLocaleString('en-US') : 'more than 10^308';
      const message = `the sweep has ${size} trials, above the limit of ${limit.toLocaleString('en-US')}; sweep fewer values, or raise the limit with --max-trials ${Number.isFinite(count) ? count : 'N'}`;
      at({ path: ['sweep'], atKey: true, message }, '', ['sweep']);
      return undefined;
    }
    return expandSweep(sweep);
  } catch (error) {
    if (!(error instanceof SweepSpecError)) throw error;
    at(
      { path: sweepKeyPath(sweepRaw, error.key), message: `sweep parameter ${error.key}: ${error.message}` },
      '',
      error.key.split('.'),
    );
    return undefined;
  }
}

/**
 * A trial a search asked for, resolved as a listed sweep's trials are: the base experiment with the values set,
 * defaults filled in, checked against the schema (the bounds were checked before training).
 */
export function resolveTrial(
  loaded: Pick<LoadedExperiment, 'base' | 'sweep'>,
  index: number,
  values: Assignment,
): ResolvedTrial {
  const { sweep: _sweep, ...base } = structuredClone(loaded.base) as Experiment;
  const experiment: Record<string, unknown> = { ...base };
  for (const [key, value] of Object.entries(values)) setPath(experiment, key.split('.'), value);
  const name = trialName(values);
  const problems = validate(experiment);
  if (problems.length)
    throw new ConfigError(`trial ${index} (${name}): ${problems.map((p) => p.message).join('; ')}`, {
      hint: 'the search asked for values the experiment refuses: narrow the sweep parameters',
    });
  if (loaded.sweep) experiment.sweep = loaded.sweep;
  const checked = experiment as Partial<Experiment> as Experiment; // the schema passed
  return { index, name, values, experiment: deepFreeze(checked), configHash: configHash(checked) };
}

// What the schema cannot say of early_terminate: epochs left to stop trials in, and a fixed number of them.
function searchProblems(
  sweep: SweepConfig,
  sweepRaw: Record<string, unknown>,
  base: Record<string, unknown>,
): FieldProblem[] {
  const stop = sweep.early_terminate;
  if (!stop) return [];
  const at = (path: string[], message: string) => ({ path, atKey: true, message });
  if ('training.epochs' in sweep.parameters)
    return [
      at(
        sweepKeyPath(sweepRaw, 'training.epochs'),
        'training.epochs cannot be swept under early_terminate: it is the most a trial trains; set it once',
      ),
    ];
  const epochs = isMapping(base.training) ? base.training.epochs : undefined;
  if (typeof epochs === 'number' && stop.min_epochs >= epochs)
    return [
      at(
        ['sweep', 'early_terminate', 'min_epochs'],
        `early_terminate.min_epochs (${stop.min_epochs}) must be below training.epochs (${epochs}), or no trial could be stopped`,
      ),
    ];
  return [];
}

const prefix = (a: { index: number; name: string }) => `trial ${a.index} (${a.name}): `;

// Sweep schema problems come at sweep.<key> or sweep.parameters.<key>; the flag that gave them is --sweep <key>.
function sweepFlagPath(p: (string | number)[]): (string | number)[] {
  const rest = p[1] === 'parameters' ? p.slice(2) : p.slice(1);
  return rest.length ? [String(rest[0])] : [];
}

// A problem in the data or backbone section (or one of them missing) leaves nothing to cross-check them with.
const touchesCrossChecks = (p: FieldProblem): boolean =>
  p.path[0] === 'data' ||
  p.path[0] === 'backbone' ||
  (p.path.length === 0 && /^(data|backbone)\b/.test(p.message)) ||
  (p.path.length === 0 && !p.message.endsWith(' is required'));

// Cross checks (cut layers, folders) depend on few fields: check each distinct combination once.
function dedupeForChecks(trials: ResolvedTrial[]): ResolvedTrial[] {
  const seen = new Set<string>();
  return trials.filter((t) => {
    const { class_weight, metrics, top_k } = t.experiment.training ?? {};
    const key = JSON.stringify([t.experiment.backbone, t.experiment.data, class_weight, metrics, top_k]);
    if (seen.has(key)) return false;
    seen.add(key);
    return true;
  });
}

function sweepKeyPath(sweepRaw: Record<string, unknown>, key: string): string[] {
  return key in sweepRaw ? ['sweep', key] : ['sweep', 'parameters', key];
}

function minimalExperiment() {
  return { name: 'x', data: { train: 'x', validation: 'x' }, backbone: { name: 'inception_v3', cut_layer: 'x' } };
}

/** sha256 of the resolved experiment's canonical JSON, without fields that don't change what is trained. */
export function configHash(e: Experiment): string {
  const { sweep: _s, tracking: _t, description: _d, ...rest } = e;
  return crypto.createHash('sha256').update(canonical(rest)).digest('hex').slice(0, 16);
}

function canonical(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(canonical).join(',')}]`;
  if (v && typeof v === 'object') {
    return `{${Object.keys(v)
      .sort()
      .map((k) => `${JSON.stringify(k)}:${canonical((v as Record<string, unknown>)[k])}`)
      .join(',')}}`;
  }
  return JSON.stringify(v);
}

function deepFreeze<T>(v: T): T {
  if (v && typeof v === 'object' && !Object.isFrozen(v)) {
    Object.freeze(v);
    for (const x of Object.values(v)) deepFreeze(x);
  }
  return v;
}
