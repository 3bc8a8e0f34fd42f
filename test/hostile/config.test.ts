// Hostile experiment files and command-line overrides: each ends in `file:line:col` (or `--flag value`) problems,
// never a stack trace, a hang or a V8 out-of-memory abort. Add new findings here.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { loadExperiment } from '../../src/config/load.ts';
import { ConfigProblems, formatProblem } from '../../src/config/problems.ts';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'xp-hostile-config-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

// A valid experiment (data by url: no folders needed) that each test breaks in one way.
const valid = `name: hostile
data: {url: https://example.com/d.zip, train: d/train, validation: d/validation}
backbone: {name: inception_v3, cut_layer: mixed7}
head: {units: [8], dropout: 0.2}
training: {epochs: 2}
`;
let n = 0;
function write(text: string): string {
  const file = path.join(tmp, `e${++n}.yaml`);
  fs.writeFileSync(file, text);
  return file;
}

/** The problem lines of a load that must fail with ConfigProblems (anything else fails the test). */
async function problems(file: string, opts: Parameters<typeof loadExperiment>[1] = {}): Promise<string[]> {
  const error = await loadExperiment(file, opts).then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error, String((error as Error)?.stack ?? 'loaded without problems')).toBeInstanceOf(ConfigProblems);
  return (error as ConfigProblems).problems.map(formatProblem);
}

describe('hostile YAML', () => {
  it('an alias bomb (billion laughs) is one file:line:col problem', async () => {
    const levels = ['a: &a [x, x, x, x, x, x, x, x, x]'];
    for (const [prev, name] of [
      ['a', 'b'],
      ['b', 'c'],
      ['c', 'd'],
      ['d', 'e'],
      ['e', 'f'],
      ['f', 'g'],
    ])
      levels.push(`${name}: &${name} [${Array(9).fill(`*${prev}`).join(', ')}]`);
    const file = write(`${levels.join('\n')}\n${valid}`);
    const lines = await problems(file);
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(new RegExp(`^${file}:2:\\d+: YAML aliases expand to too many values`));
  });

  it('60k distinct keys are checked for duplicates in linear time', async () => {
    const keys = Array.from({ length: 60_000 }, (_, i) => `k${i}: 1`).join('\n');
    const file = write(`${valid}extra:\n${keys.replace(/^/gm, '  ')}\n  k7: 2\n`);
    const started = performance.now();
    const lines = await problems(file);
    const seconds = (performance.now() - started) / 1000;
    expect(lines[0]).toMatch(
      new RegExp(`^${file}:\\d+:3: YAML syntax error: Map keys must be unique \\(k7 appears twice\\)`),
    );
    // Quadratic checking takes minutes on this many keys.
    expect(seconds).toBeLessThan(20);
  }, 60_000);

  it('a file above 1 MiB is refused with its name and the limit, before it is parsed', async () => {
    const file = write(`${valid}# ${'x'.repeat(1024 * 1024)}\n`);
    const lines = await problems(file);
    expect(lines).toEqual([
      expect.stringMatching(
        new RegExp(`^${file}: the file is \\d+ bytes, above the 1048576 bytes \\(1 MiB\\) allowed`),
      ),
    ]);
  });

  it('a path that is not a regular file is refused', async () => {
    expect(await problems(tmp)).toEqual([`${tmp}: not a regular file; give the path of an experiment .yaml file`]);
  });

  it('__proto__, constructor and prototype are refused as keys anywhere in a file', async () => {
    for (const [text, at] of [
      [`__proto__: {name: x}\n${valid}`, '1:1'],
      [valid.replace('head: {', 'head: {constructor: 1, '), '4:8'],
      [`${valid}sweep:\n  parameters: {prototype: [1, 2]}\n`, '7:16'],
    ]) {
      const file = write(text);
      const lines = await problems(file);
      expect(lines).toContainEqual(
        expect.stringMatching(new RegExp(`^${file}:${at}: (__proto__|constructor|prototype) cannot be a key`)),
      );
    }
  });

  it('an unclosed {a:{a:... nesting is one line per problem, not one per level', async () => {
    const file = write(`${valid}extra: ${'{a: '.repeat(40)}1\n`);
    const lines = await problems(file);
    expect(lines.length).toBeLessThanOrEqual(2);
    expect(new Set(lines.map((l) => l.split(': ')[0])).size).toBe(lines.length);
  });

  it('deep nesting is one problem, whether the parser copes or not', async () => {
    for (const depth of [100, 3000]) {
      const file = write(`${valid}extra: ${'{a: '.repeat(depth)}1${'}'.repeat(depth)}\n`);
      const lines = await problems(file);
      expect(lines).toHaveLength(1);
      expect(lines[0]).toMatch(/nested (more than 64 levels deep|too deeply to parse)/);
    }
  });
});

describe('hostile --set and --sweep', () => {
  const file = write(valid);
  const cases: [string, string, RegExp][] = [
    ['--set', 'head.units=[1,2', /^--set head\.units=\[1,2: the value is not valid YAML: /],
    ['--set', 'head.dropout={', /^--set head\.dropout=\{: the value is not valid YAML: /],
    ['--set', '=*a', /^--set =\*a: expected key=value/],
    ['--set', 'name=a\n---\nb', /^--set "name=a\\n---\\nb": the value is not valid YAML: a --- document marker/],
    ['--set', 'head.dropout', /^--set head\.dropout: expected key=value/],
    ['--set', 'head.dropout=*x', /^--set head\.dropout=\*x: the value is not valid YAML/],
    ['--sweep', 'head.dropout=,,', /^--sweep head\.dropout=,,: expected a comma-separated list of values: /],
    ['--sweep', 'head.dropout=', /^--sweep head\.dropout=: expected at least one value/],
    ['--sweep', 'head.dropout=[1,', /^--sweep head\.dropout=\[1,: expected a comma-separated list/],
    ['--set', 'head.__proto__=1', /^--set head\.__proto__=1: __proto__ cannot be a key/],
    ['--set', 'constructor.x=1', /^--set constructor\.x=1: constructor cannot be a key/],
    ['--sweep', 'head.__proto__=1,2', /^--sweep head\.__proto__=1,2: __proto__ cannot be a key/],
    [
      '--set',
      'head={__proto__: {dropout: 0.9}}',
      /^--set "head=\{__proto__: \{dropout: 0\.9\}\}": the value is not valid YAML: __proto__ cannot be a key/,
    ],
  ];
  for (const [flag, arg, expected] of cases) {
    it(`${flag} ${JSON.stringify(arg)} is one problem naming the flag`, async () => {
      const lines = await problems(file, flag === '--set' ? { set: [arg] } : { sweep: [arg] });
      expect(lines).toHaveLength(1);
      expect(lines[0]).toMatch(expected);
    });
  }

  it('a --set value the schema refuses is reported under the flag, not at the line of the file', async () => {
    expect(await problems(file, { set: ['head.dropout=1.5'] })).toEqual([
      '--set head.dropout=1.5: head.dropout must be < 1 (got 1.5)',
    ]);
  });

  it('a field given twice to --sweep is refused naming both flags and the one flag to write, not the last kept', async () => {
    expect(await problems(file, { sweep: ['head.dropout=0.1,0.2', 'head.dropout=0.3'] })).toEqual([
      '--sweep head.dropout=0.3: head.dropout is also given by --sweep head.dropout=0.1,0.2; give it once, with every value: --sweep head.dropout=0.1,0.2,0.3',
    ]);
  });

  it('a field given twice to --set is refused as well', async () => {
    expect(await problems(file, { set: ['head.dropout=0.1', 'head.dropout=0.3'] })).toEqual([
      '--set head.dropout=0.3: head.dropout is also given by --set head.dropout=0.1; give it once',
    ]);
  });
});

describe('origins of values that null reset', () => {
  it("xp config --origins says default for a value a child file removed with null, not the child's line", async () => {
    const base = write(`${valid}augmentation: {rotation_range: 30}\n`);
    const child = write(
      `extends: ${base}\nhead: {units: null, dropout: 0.4}\naugmentation: null\ntraining: {epochs: null}\n`,
    );
    const loaded = await loadExperiment(child, { deep: false });
    expect(loaded.base.head.units).toEqual([1024]);
    expect(loaded.origin(['head', 'units'])).toBe('default');
    expect(loaded.origin(['head', 'dropout'])).toBe(`${child}:2:30`);
    expect(loaded.base.augmentation.rotation_range).toBe(0);
    expect(loaded.origin(['augmentation', 'rotation_range'])).toBe('default');
    expect(loaded.origin(['training', 'epochs'])).toBe('default');
    expect(loaded.origin(['backbone', 'cut_layer'])).toBe(`${base}:3:43 (extended by ${child})`);
  });
});

describe('huge sweeps', () => {
  const file = write(valid);
  const values = (count: number) => Array.from({ length: count }, (_, i) => i + 1).join(',');

  it('10^8 grid points are refused at once with the count and how to raise the limit', async () => {
    const started = performance.now();
    const lines = await problems(file, {
      sweep: ['training.epochs', 'training.seed', 'training.steps_per_epoch', 'training.validation_steps'].map(
        (k) => `${k}=${values(100)}`,
      ),
    });
    expect(lines).toEqual([
      '--sweep: the sweep has 100,000,000 trials, above the limit of 10,000; sweep fewer values, or raise the limit with --max-trials 100000000',
    ]);
    expect(performance.now() - started).toBeLessThan(2000);
  });

  it('a 1M-point grid in the file is refused at the sweep, instantly', async () => {
    const grid = write(`${valid}sweep:\n  training.epochs: [${values(1000)}]\n  training.seed: [${values(1000)}]\n`);
    const started = performance.now();
    const lines = await problems(grid);
    expect(lines).toEqual([
      `${grid}:6:1: the sweep has 1,000,000 trials, above the limit of 10,000; sweep fewer values, or raise the limit with --max-trials 1000000`,
    ]);
    expect(performance.now() - started).toBeLessThan(2000);
  });

  it('maxTrials moves the limit both ways', async () => {
    const sweep = ['training.epochs=1,2,3', 'training.seed=1,2,3,4'];
    expect((await loadExperiment(file, { sweep, maxTrials: 12 })).trials).toHaveLength(12);
    expect(await problems(file, { sweep, maxTrials: 11 })).toEqual([
      expect.stringContaining('the sweep has 12 trials, above the limit of 11'),
    ]);
  });

  it('random sweeps count their trials too', async () => {
    const random = write(
      `${valid}sweep:\n  method: random\n  trials: 50\n  head.dropout: {distribution: uniform, min: 0.1, max: 0.5}\n`,
    );
    expect(await problems(random, { maxTrials: 49 })).toEqual([
      expect.stringContaining('the sweep has 50 trials, above the limit of 49'),
    ]);
  });
});
