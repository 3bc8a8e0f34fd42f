// Command-line overrides, Hydra style: `--set key=value` pins a field (a swept field included: the sweep shrinks),
// `--sweep key=a,b,c` sweeps one. A bad flag is reported under the flag's own text, not under the file.
import { isMapping } from './mapping.ts';
import { didYouMean, type Problem } from './problems.ts';
import { parseValue, RESERVED_KEYS } from './parse.ts';
import { setPath } from './sweep.ts';
import { isKnownField, knownFields } from './validate.ts';

export interface Override {
  flag: '--set' | '--sweep';
  /** The flag's argument as given, e.g. `head.dropout=0.5`: problems are reported under `--set head.dropout=0.5`. */
  arg: string;
  key: string;
  value: unknown;
}

export function parseOverrides(
  set: string[] = [],
  sweep: string[] = [],
): { overrides: Override[]; problems: Problem[] } {
  const overrides: Override[] = [];
  const problems: Problem[] = [];
  const parse = (flag: Override['flag'], arg: string) => {
    const problem = (message: string) => problems.push({ file: flagText(flag, arg), message });
    const eq = arg.indexOf('=');
    if (eq < 1)
      return problem(
        `expected key=value, e.g. ${flag} ${flag === '--set' ? 'head.dropout=0.5' : 'head.dropout=0.1,0.2,0.5'}`,
      );
    const key = arg.slice(0, eq);
    const segments = key.split('.');
    const reserved = segments.find((s) => RESERVED_KEYS.includes(s));
    if (reserved) return problem(`${reserved} cannot be a key (reserved by JavaScript)`);
    if (segments.includes('sweep') && segments[0] === 'sweep')
      return problem(`the sweep is set with --sweep key=a,b,c, not ${flag} ${key}`);
    if (segments[0] === 'extends')
      return problem(
        'extends is written in the experiment file; give the base file as the experiment, or write a file that extends both',
      );
    if (!isKnownField(segments)) return problem(`${key} is not a known field${didYouMean(key, knownFields())}`);
    const text = arg.slice(eq + 1);
    let value: unknown;
    try {
      value = parseValue(flag === '--sweep' ? `[${text}]` : text);
    } catch (error) {
      return problem(
        `${flag === '--sweep' ? 'expected a comma-separated list of values' : 'the value is not valid YAML'}: ${(error as Error).message}`,
      );
    }
    if (flag === '--sweep' && (!Array.isArray(value) || value.length === 0))
      return problem('expected at least one value, e.g. head.dropout=0.1,0.2');
    overrides.push({ flag, arg, key, value });
  };
  for (const arg of set) parse('--set', arg);
  for (const arg of sweep) parse('--sweep', arg);
  // A field given twice to one flag would keep only the last: refused, as Hydra refuses it, naming both.
  const first = new Map<string, Override>();
  for (const o of overrides) {
    const earlier = first.get(`${o.flag} ${o.key}`);
    if (!earlier) first.set(`${o.flag} ${o.key}`, o);
    else
      problems.push({
        file: flagText(o.flag, o.arg),
        message: `${o.key} is also given by ${flagText(earlier.flag, earlier.arg)}; give it once${
          o.flag === '--sweep'
            ? `, with every value: --sweep ${o.key}=${[earlier, o].map((x) => x.arg.slice(x.key.length + 1)).join(',')}`
            : ''
        }`,
      });
  }
  const swept = new Set(overrides.filter((o) => o.flag === '--sweep').map((o) => o.key));
  for (const o of overrides) {
    if (o.flag === '--set' && swept.has(o.key))
      problems.push({
        file: flagText(o.flag, o.arg),
        message: `${o.key} is also given to --sweep; give one of the two`,
      });
  }
  return { overrides, problems };
}

/**
 * Applies overrides to the file's data in place: `--sweep` adds (or replaces) a sweep parameter, `--set` sets a
 * field and removes any sweep parameter on it. A sweep left without parameters is a single run. Returns the
 * `--set` flags that pinned a swept field.
 */
export function applyOverrides(raw: Record<string, unknown>, overrides: Override[]): string[] {
  for (const o of overrides) {
    if (o.flag === '--sweep') raw.sweep = { ...(typeof raw.sweep === 'object' ? raw.sweep : {}), [o.key]: o.value };
  }
  const pinned: string[] = [];
  for (const o of overrides) {
    if (o.flag !== '--set') continue;
    setPath(raw, o.key.split('.'), o.value);
    if (isMapping(raw.sweep) && pin(raw.sweep, o.key)) pinned.push(flagText(o.flag, o.arg));
  }
  if (pinned.length && isMapping(raw.sweep) && !hasParameters(raw.sweep)) delete raw.sweep;
  return pinned;
}

function hasParameters(sweep: Record<string, unknown>): boolean {
  const { parameters } = sweep;
  const params = parameters && typeof parameters === 'object' ? Object.keys(parameters) : [];
  return params.length > 0 || Object.keys(sweep).some((k) => !PARAMETER_SETTINGS.includes(k));
}

const PARAMETER_SETTINGS = ['method', 'trials', 'seed', 'metric', 'goal', 'parameters'];
const overlaps = (a: string, b: string) => a === b || a.startsWith(`${b}.`) || b.startsWith(`${a}.`);

/** Removes the sweep parameters on `key`; true when there was one. */
function pin(sweep: Record<string, unknown>, key: string): boolean {
  let removed = false;
  for (const k of Object.keys(sweep))
    if (!PARAMETER_SETTINGS.includes(k) && overlaps(k, key)) removed = delete sweep[k];
  const params = sweep.parameters;
  if (isMapping(params)) for (const k of Object.keys(params)) if (overlaps(k, key)) removed = delete params[k];
  return removed;
}

/** How a flag is named in problems: `--set head.units=[1,2`, quoted when it holds spaces or line breaks. */
export const flagText = (flag: string, arg: string): string =>
  `${flag} ${/[\s'"]/.test(arg) ? JSON.stringify(arg) : arg}`;

/** The override that gave the value at a field path, if any (the last one wins, as when applied). */
export function overrideAt(
  overrides: Override[],
  path: (string | number)[],
  flag?: Override['flag'],
): Override | undefined {
  const dotted = path.join('.');
  const matches = overrides.filter(
    (o) => (!flag || o.flag === flag) && (dotted === o.key || dotted.startsWith(`${o.key}.`)),
  );
  return matches[matches.length - 1];
}
