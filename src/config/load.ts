// The one load pipeline: parse YAML (keeping positions) -> apply --set/--sweep -> expand the sweep ->
// defaults + schema per trial -> cross-field checks -> frozen, resolved experiments.
import fs from 'node:fs';
import path from 'node:path';
import crypto from 'node:crypto';
import YAML, { isMap, isSeq, LineCounter, type Document, type Node } from 'yaml';
import type { Experiment, SweepConfig } from './types.ts';
import { ConfigProblems, didYouMean, type Problem } from './problems.ts';
import { isKnownField, knownFields, validate, type FieldProblem } from './validate.ts';
import { expandSweep, normalizeSweep, setPath, SweepSpecError, type Assignment } from './sweep.ts';
import { crossChecks } from './cross-checks.ts';

export interface LoadOptions {
  /** `key=value` overrides (Hydra style), values parsed as YAML. */
  set?: string[];
  /** `key=a,b,c`: adds a swept field. */
  sweep?: string[];
  /** Check that cut layers exist and data folders are there (default true). */
  deep?: boolean;
}

export interface ResolvedTrial {
  index: number;
  name: string; // readable, e.g. "dropout=0.2 epochs=10", or the experiment's name
  values: Assignment;
  experiment: Experiment;
  configHash: string;
}

export interface LoadedExperiment {
  file: string;
  baseDir: string;
  /** The experiment without sweep values applied (what a sweep's parent run records). */
  base: Experiment;
  sweep?: SweepConfig;
  trials: ResolvedTrial[];
}

export async function loadExperiment(file: string, opts: LoadOptions = {}): Promise<LoadedExperiment> {
  const source = parseFile(file);
  const problems: Problem[] = [];
  const at = (p: FieldProblem, prefix = '') => problems.push({ file, ...source.position(p.path, p.atKey), message: prefix + p.message });

  const raw = source.doc.toJS() as Record<string, any>;
  applyOverrides(raw, opts, file, problems);
  const sweepRaw = raw.sweep as Record<string, unknown> | undefined;
  delete raw.sweep;

  // The base experiment (no sweep values) must be valid on its own, except for fields only the sweep sets.
  const base = structuredClone(raw);
  const baseProblems = validate(base);
  let sweep: SweepConfig | undefined;
  let assignments: { index: number; name: string; values: Assignment }[] = [{ index: 1, name: String(raw.name ?? ''), values: {} }];
  if (sweepRaw) {
    const sweepProblems = validate({ ...minimalExperiment(), sweep: sweepRaw });
    for (const p of sweepProblems) at({ ...p, path: p.path });
    sweep = normalizeSweep(sweepRaw, base.training?.seed ?? 42);
    for (const key of Object.keys(sweep.parameters)) {
      const keyPath = sweepKeyPath(sweepRaw, key);
      if (key.startsWith('sweep.') || !isKnownField(key.split('.'))) {
        at({ path: keyPath, atKey: true, message: `sweep parameter ${key} is not a known field${didYouMean(key, knownFields())}` });
      }
    }
    try {
      assignments = expandSweep(sweep);
    } catch (error) {
      if (!(error instanceof SweepSpecError)) throw error;
      at({ path: sweepKeyPath(sweepRaw, error.key), message: `sweep parameter ${error.key}: ${error.message}` });
    }
  }
  const swept = new Set(sweep ? Object.keys(sweep.parameters) : []);
  for (const p of baseProblems) {
    // "x is required" on the base is fine when the sweep provides x.
    if (p.message.endsWith(' is required') && swept.has(p.message.replace(/ is required$/, ''))) continue;
    at(p);
  }
  if (problems.length) throw new ConfigProblems(problems);

  const trials: ResolvedTrial[] = [];
  for (const a of assignments) {
    const experiment = structuredClone(raw);
    for (const [key, value] of Object.entries(a.values)) setPath(experiment, key.split('.'), value);
    const trialProblems = validate(experiment);
    for (const p of trialProblems) {
      const key = Object.keys(a.values).find((k) => p.path.join('.').startsWith(k));
      const prefix = `trial ${a.index} (${a.name}): `;
      if (key && sweepRaw) at({ path: sweepKeyPath(sweepRaw, key), message: p.message }, prefix);
      else at(p, sweep ? prefix : '');
    }
    if (!trialProblems.length) {
      if (sweep) experiment.sweep = sweep;
      trials.push({ ...a, name: sweep ? a.name : experiment.name, experiment: deepFreeze(experiment as Experiment), configHash: configHash(experiment as Experiment) });
    }
  }
  if (problems.length) throw new ConfigProblems(problems);

  const baseDir = path.dirname(path.resolve(file));
  if (opts.deep !== false) {
    for (const t of dedupeForChecks(trials)) {
      for (const p of await crossChecks(t.experiment, baseDir)) at(p, sweep ? `trial ${t.index} (${t.name}): ` : '');
    }
    if (problems.length) throw new ConfigProblems(problems);
  }
  validate(base); // fill defaults in the base too
  if (sweep) base.sweep = sweep;
  return { file, baseDir, base: deepFreeze(base as Experiment), sweep, trials };
}

// Cross checks (cut layers, folders) depend on few fields: check each distinct combination once.
function dedupeForChecks(trials: ResolvedTrial[]): ResolvedTrial[] {
  const seen = new Set<string>();
  return trials.filter((t) => {
    const key = JSON.stringify([t.experiment.backbone, t.experiment.data]);
    return seen.has(key) ? false : (seen.add(key), true);
  });
}

interface Source {
  doc: Document;
  position(path: (string | number)[], atKey?: boolean): { line?: number; col?: number };
}

function parseFile(file: string): Source {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (error: any) {
    throw new ConfigProblems([{ file, message: error.code === 'ENOENT' ? 'no such file' : `cannot read (${error.code ?? error.message})` }]);
  }
  const lineCounter = new LineCounter();
  const doc = YAML.parseDocument(text, { lineCounter, prettyErrors: false, uniqueKeys: true });
  if (doc.errors.length) {
    throw new ConfigProblems(
      doc.errors.map((e) => {
        const { line, col } = lineCounter.linePos(e.pos[0]);
        return { file, line, col, message: `YAML syntax error: ${e.message.split('\n')[0]}` };
      }),
    );
  }
  if (!isMap(doc.contents)) {
    const kind = doc.contents === null ? 'an empty document' : isSeq(doc.contents) ? 'a list' : 'a single value';
    throw new ConfigProblems([{ file, line: 1, col: 1, message: `an experiment must be a mapping of fields (name, data, backbone, ...), got ${kind}` }]);
  }
  const position = (fieldPath: (string | number)[], atKey = false) => {
    let node: Node | null | undefined = doc.contents;
    let offset = node?.range?.[0] ?? 0;
    for (let i = 0; i < fieldPath.length && node; i++) {
      const k = fieldPath[i];
      if (isMap(node)) {
        const pair = node.items.find((it) => (it.key as any)?.value === k);
        if (!pair) break;
        const last = i === fieldPath.length - 1;
        node = pair.value as Node | null;
        offset = (last && atKey) || !node?.range ? ((pair.key as Node).range?.[0] ?? offset) : node.range[0];
      } else if (isSeq(node)) {
        node = node.items[Number(k)] as Node | undefined;
        if (node?.range) offset = node.range[0];
      } else break;
    }
    const { line, col } = lineCounter.linePos(offset);
    return { line, col };
  };
  return { doc, position };
}

function applyOverrides(raw: Record<string, any>, opts: LoadOptions, file: string, problems: Problem[]): void {
  const parse = (flag: string, arg: string) => {
    const eq = arg.indexOf('=');
    if (eq < 1) {
      problems.push({ file, message: `${flag} ${arg}: expected key=value, e.g. ${flag} head.dropout=0.5` });
      return undefined;
    }
    const key = arg.slice(0, eq);
    if (!isKnownField(key.split('.'))) {
      problems.push({ file, message: `${flag} ${arg}: ${key} is not a known field${didYouMean(key, knownFields())}` });
      return undefined;
    }
    return { key, text: arg.slice(eq + 1) };
  };
  for (const arg of opts.set ?? []) {
    const o = parse('--set', arg);
    if (o) setPath(raw, o.key.split('.'), YAML.parse(o.text));
  }
  for (const arg of opts.sweep ?? []) {
    const o = parse('--sweep', arg);
    if (!o) continue;
    const values = YAML.parse(`[${o.text}]`) as unknown[];
    raw.sweep = { ...(raw.sweep ?? {}), [o.key]: values };
  }
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
    return `{${Object.keys(v).sort().map((k) => `${JSON.stringify(k)}:${canonical((v as any)[k])}`).join(',')}}`;
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
