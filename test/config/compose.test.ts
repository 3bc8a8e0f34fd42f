// `extends:` and experiments by URL, up to the resolved experiment (no training): merging, paths resolved against
// the file that wrote them, positions through the chain, cycles, null, http refused, `xp config`, the cache and
// --reload. A local HTTP server on 127.0.0.1 stands in for the web.
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { loadExperiment } from '../../src/config/load.ts';
import { ConfigProblems, formatProblem } from '../../src/config/problems.ts';
import { startFileServer, type FileServer } from '../remote/helpers.ts';

const root = path.resolve(import.meta.dirname, '../..');
const bin = path.join(root, 'bin', 'xp.js');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'xp-compose-'));
const cache = path.join(tmp, 'cache');
let web: FileServer;

const xp = (args: string[]) =>
  execa(process.execPath, [bin, ...args], { reject: false, cwd: tmp, env: { XP_CACHE_DIR: cache } });
const write = (name: string, text: string): string => {
  const file = path.join(tmp, name);
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(file, text);
  return file;
};
const sha = (text: string) => createHash('sha256').update(text).digest('hex');
/** The problems loading `spec` reports, as the CLI prints them. */
const problemsOf = (spec: string) =>
  loadExperiment(spec, { deep: false }).then(
    () => [],
    (error: unknown) => {
      if (!(error instanceof ConfigProblems)) throw error;
      return error.problems.map(formatProblem);
    },
  );

const BASE = `name: base
data: {url: https://example.org/pets.zip, train: pets/train, validation: pets/validation, image_size: [96, 96], max_per_class: 16}
backbone: {name: mobilenet_v2, weights: nsfwjs, cut_layer: block_2_add}
head:
  pooling: avg
  units: [8, 4]
  dropout: 0.2
sweep:
  head.dropout: [0.1, 0.2]
  optimizer.learning_rate: [0.01, 0.001]
`;

beforeAll(async () => {
  process.env.XP_CACHE_DIR = cache;
  web = await startFileServer();
});
afterAll(async () => {
  await web.close();
  fs.rmSync(tmp, { recursive: true, force: true });
});

describe('composing files', () => {
  test('a remote base extended by a local file: deep merge, later wins, lists replaced, sweep merged by key', async () => {
    const baseUrl = web.put('/local-ext/base.yaml', BASE);
    const file = write(
      'local-ext.yaml',
      `extends: ${baseUrl}
name: mine
head: {units: [16]}
sweep:
  head.dropout: [0.3]
`,
    );
    const loaded = await loadExperiment(file, { deep: false });
    expect(loaded.base.name).toBe('mine');
    expect(loaded.base.head).toMatchObject({ pooling: 'avg', units: [16], dropout: 0.2 });
    expect(loaded.base.data.max_per_class).toBe(16);
    expect(loaded.sweep!.parameters).toEqual({ 'head.dropout': [0.3], 'optimizer.learning_rate': [0.01, 0.001] });
    expect(loaded.trials).toHaveLength(2);
    expect(loaded.sources).toEqual([
      { spec: file, sha256: sha(fs.readFileSync(file, 'utf8')), remote: false },
      { spec: baseUrl, url: baseUrl, sha256: sha(BASE), remote: true },
    ]);
  });

  test('a remote base extended by a remote file, named relative to it', async () => {
    const baseUrl = web.put('/chain/bases/base.yaml', BASE);
    const expUrl = web.put(
      '/chain/exp/exp.yaml',
      'extends: ../bases/base.yaml\nname: remote-exp\nhead: {dropout: 0.4}\n',
    );
    const loaded = await loadExperiment(expUrl, { deep: false });
    expect(loaded.base.name).toBe('remote-exp');
    expect(loaded.base.head.dropout).toBe(0.4);
    expect(loaded.sources.map((s) => [s.spec, s.remote])).toEqual([
      [expUrl, true],
      [baseUrl, true],
    ]);
  });

  test('bases merge in order, each after its own bases; sources list the experiment, then its bases as merged', async () => {
    const a = write('order/a.yaml', 'head: {dropout: 0.1, units: [1]}\n');
    const b = write('order/b.yaml', 'extends: a.yaml\nhead: {dropout: 0.2}\n');
    const c = write('order/c.yaml', 'head: {units: [3]}\n');
    const exp = write('order/exp.yaml', `extends: [b.yaml, c.yaml]\n${BASE.replace(/head:[\s\S]*$/, '')}`);
    const loaded = await loadExperiment(exp, { deep: false });
    expect(loaded.base.head).toMatchObject({ dropout: 0.2, units: [3] });
    expect(loaded.sources.map((s) => s.spec)).toEqual([exp, a, b, c]);
  });

  test('a field set to null is removed, and the schema default applies again', async () => {
    const base = write('null/base.yaml', BASE);
    const file = write(
      'null/exp.yaml',
      `extends: ${path.basename(base)}\ndata: {max_per_class: null}\nhead: {units: null}\nsweep: {head.dropout: null}\n`,
    );
    const loaded = await loadExperiment(file, { deep: false });
    expect(loaded.base.data).not.toHaveProperty('max_per_class');
    expect(loaded.base.data.image_size).toEqual([96, 96]);
    expect(loaded.base.head.units).toEqual([1024]); // the schema's default, not the base's [8, 4]
    expect(Object.keys(loaded.sweep!.parameters)).toEqual(['optimizer.learning_rate']);
  });

  test('a cycle is an error naming the chain, at the extends line', async () => {
    write('cycle/a.yaml', 'extends: b.yaml\nname: a\n');
    write('cycle/b.yaml', 'name: b\nextends: [c.yaml]\n');
    write('cycle/c.yaml', 'extends: a.yaml\n');
    const problems = await problemsOf(path.join(tmp, 'cycle/a.yaml'));
    expect(problems).toHaveLength(1);
    const [a, b, c] = ['a', 'b', 'c'].map((n) => path.join(tmp, `cycle/${n}.yaml`));
    expect(problems[0]).toBe(
      `${c}:1:10 (extended by ${b}, extended by ${a}): extends: a cycle: ${a} -> ${b} -> ${c} -> ${a}; remove one of these extends`,
    );
  });

  test('more than 8 levels of extends is an error naming the chain', async () => {
    for (let i = 0; i < 10; i++) write(`deep/f${i}.yaml`, `extends: f${i + 1}.yaml\n`);
    write('deep/f10.yaml', BASE);
    const problems = await problemsOf(path.join(tmp, 'deep/f0.yaml'));
    expect(problems).toHaveLength(1);
    expect(problems[0]).toMatch(
      /^\S+\/deep\/f8\.yaml:1:10 \(extended by \S+\/f7\.yaml, .*\/f0\.yaml\): extends: more than 8 levels of extends \(\S+\/f0\.yaml -> .* -> \S+\/f9\.yaml\); merge some of these files$/,
    );
  });

  test('a base that does not exist or does not parse is reported at the extends entry, or inside it with the chain', async () => {
    const missing = write('bad/missing.yaml', 'name: x\nextends:\n  - nowhere.yaml\n');
    expect(await problemsOf(missing)).toEqual([
      `${missing}:3:5: extends: no such file: ${path.join(tmp, 'bad/nowhere.yaml')}`,
    ]);
    write('bad/broken.yaml', 'head: {units: [1, 2}\n');
    const broken = write('bad/uses-broken.yaml', 'extends: broken.yaml\n');
    expect((await problemsOf(broken))[0]).toMatch(
      /^\S+\/bad\/broken\.yaml:1:\d+ \(extended by \S+\/uses-broken\.yaml\): YAML syntax error/,
    );
  });
});

test('extends must be paths or URLs, and is written in files, not flags', async () => {
  const file = write('kinds/exp.yaml', 'name: x\nextends: [base.yaml, 3]\n');
  expect(await problemsOf(file)).toEqual([
    `${file}:2:22: extends must be the path or URL of an experiment file, or a list of them`,
  ]);
  const flagged = await loadExperiment(file, { set: ['extends=base.yaml'] }).catch((error: ConfigProblems) =>
    error.problems.map(formatProblem),
  );
  expect(flagged).toEqual([
    expect.stringMatching(/^--set extends=base\.yaml: extends is written in the experiment file/),
  ]);
});

describe('positions through the chain', () => {
  test('a problem in an inherited value points at the file and line that wrote it, with the chain', async () => {
    const base = write('pos/base.yaml', BASE.replace('dropout: 0.2', 'dropout: 1.5'));
    const file = write('pos/exp.yaml', `extends: base.yaml\nname: pos\n`);
    expect(await problemsOf(file)).toEqual([`${base}:7:12 (extended by ${file}): head.dropout must be < 1 (got 1.5)`]);
    // The same through a remote chain: positions in the remote file, named by its URL.
    const baseUrl = web.put('/pos/base.yaml', fs.readFileSync(base, 'utf8'));
    const expUrl = web.put('/pos/exp.yaml', 'extends: base.yaml\nname: pos\n');
    expect(await problemsOf(expUrl)).toEqual([
      `${baseUrl}:7:12 (extended by ${expUrl}): head.dropout must be < 1 (got 1.5)`,
    ]);
    // A value the extending file writes is its own.
    const own = write('pos/own.yaml', `extends: base.yaml\nhead:\n  dropout: 2\n`);
    expect(await problemsOf(own)).toEqual([`${own}:3:12: head.dropout must be < 1 (got 2)`]);
  });
});

describe('paths resolve against the file that wrote them', () => {
  test("in a local base, against the base file's folder, not the extending file's", async () => {
    write(
      'paths/lib/base.yaml',
      `${BASE.replace('url: https://example.org/pets.zip, train: pets/train, validation: pets/validation', 'train: images/train, validation: images/validation').replace('nsfwjs', 'w/model.h5')}`,
    );
    const file = write('paths/exp.yaml', 'extends: lib/base.yaml\n');
    const loaded = await loadExperiment(file, { deep: false });
    expect(loaded.base.data.train).toBe(path.join(tmp, 'paths/lib/images/train'));
    expect(loaded.base.backbone.weights).toBe(path.join(tmp, 'paths/lib/w/model.h5'));
    // A flag's path is the command line's: from the current folder.
    const flagged = await loadExperiment(file, { deep: false, set: ['backbone.weights=x.h5'] });
    expect(flagged.base.backbone.weights).toBe(path.resolve('x.h5'));
  });

  test('swept values of those fields too: from the file that wrote the sweep, or the current folder for --sweep', async () => {
    write('swept/lib/base.yaml', `${BASE.replace(/sweep:[\s\S]*$/, 'sweep:\n  backbone.weights: [a.h5, nsfwjs]\n')}`);
    const file = write('swept/exp.yaml', 'extends: lib/base.yaml\n');
    const loaded = await loadExperiment(file, { deep: false });
    expect(loaded.trials.map((t) => t.experiment.backbone.weights)).toEqual([
      path.join(tmp, 'swept/lib/a.h5'),
      'nsfwjs',
    ]);
    const flagged = await loadExperiment(file, { deep: false, sweep: ['backbone.weights=b.h5,imagenet'] });
    expect(flagged.trials.map((t) => t.experiment.backbone.weights)).toEqual([path.resolve('b.h5'), 'imagenet']);
  });

  test('in a remote file, weights become URLs relative to it; data folders without data.url are refused', async () => {
    const expUrl = web.put('/rel/exp.yaml', `${BASE.replace('url: https://example.org/pets.zip, ', '')}`);
    const problems = await problemsOf(expUrl);
    expect(problems).toEqual([
      expect.stringMatching(
        new RegExp(
          `^${expUrl}:2:15: data.train: ${expUrl} is a remote file, and a folder cannot be fetched; give data.url`,
        ),
      ),
      expect.stringMatching(new RegExp(`^${expUrl}:2:\\d+: data.validation: .*give data.url`)),
    ]);
    const withUrl = web.put('/rel/with-url.yaml', `${BASE.replace('nsfwjs', 'weights/backbone.h5')}`);
    const loaded = await loadExperiment(withUrl, { deep: false });
    expect(loaded.base.backbone.weights).toBe(`${web.url}/rel/weights/backbone.h5`);
    expect(loaded.base.data.train).toBe('pets/train'); // inside the archive: not resolved
    // An absolute path in a remote file is a path on its host; only a file:// URL names the local disk (and the
    // sandbox asks for it: test/cli/sandbox.test.ts); a remote file never extends a local one.
    const absolute = web.put('/rel/absolute.yaml', `${BASE.replace('nsfwjs', '/home/me/w.h5')}`);
    expect((await loadExperiment(absolute, { deep: false })).base.backbone.weights).toBe(`${web.url}/home/me/w.h5`);
    const local = web.put(
      '/rel/local.yaml',
      `extends: file:///etc/hosts\n${BASE.replace('nsfwjs', 'file:///home/me/w.h5')}`,
    );
    expect(await problemsOf(local)).toEqual([
      `${local}:1:10: extends: file:///etc/hosts: a remote file can only extend URLs (got file://)`,
    ]);
    const localWeights = web.put('/rel/local-weights.yaml', BASE.replace('nsfwjs', 'file:///home/me/w.h5'));
    expect((await loadExperiment(localWeights, { deep: false })).base.backbone.weights).toBe('/home/me/w.h5');
    const json = web.put('/rel/json.yaml', `${BASE.replace('nsfwjs', 'tm/model.json')}`);
    expect(await problemsOf(json)).toEqual([
      expect.stringMatching(
        /json\.yaml:3:\d+: backbone\.weights: a tfjs model\.json cannot be used from a URL .*give a Keras \.h5 URL/,
      ),
    ]);
  });
});

describe('fetching', () => {
  test('http:// is refused for hosts other than loopback, saying what to do', async () => {
    const r = await xp(['check', 'http://example.com/exp.yaml']);
    expect(r.exitCode).not.toBe(0);
    expect(r.stderr).toMatch(
      /plain http:\/\/ is refused for example\.com \(only 127\.0\.0\.1, ::1 and localhost .*\); use https:\/\/example\.com\/exp\.yaml/,
    );
    const file = write('http/exp.yaml', 'name: x\nextends: http://example.com/base.yaml\n');
    expect(await problemsOf(file)).toEqual([
      expect.stringMatching(/exp\.yaml:2:10: extends: plain http:\/\/ is refused for example\.com/),
    ]);
  });

  test('a remote file is cached: read again from the cache, fetched again with --reload', async () => {
    const url = web.put('/reload/exp.yaml', `${BASE.replace('name: base', 'name: first')}`);
    const name = async (...flags: string[]) => {
      const r = await xp(['config', url, ...flags]);
      expect(r.exitCode, r.stderr).toBe(0);
      return /^name: (\S+)/m.exec(r.stdout)![1];
    };
    expect(await name()).toBe('first');
    expect(web.hits('/reload/exp.yaml')).toBe(1);
    web.put('/reload/exp.yaml', `${BASE.replace('name: base', 'name: second')}`);
    expect(await name()).toBe('first');
    expect(web.hits('/reload/exp.yaml')).toBe(1);
    // Refetched content that differs from what xp.lock pinned stops, until --lock-write accepts it (as deno --reload).
    const refused = await xp(['config', url, '--reload']);
    expect(refused.exitCode).not.toBe(0);
    expect(refused.stderr).toContain('does not match its entry in the lock file');
    expect(refused.stderr).toContain('--lock-write');
    expect(web.hits('/reload/exp.yaml')).toBe(2);
    expect(await name('--reload', '--lock-write')).toBe('second');
    expect(web.hits('/reload/exp.yaml')).toBe(3);
    expect(await name()).toBe('second');
    expect(web.hits('/reload/exp.yaml')).toBe(3);
    // A cached copy whose bytes changed on disk is not used: the URL is fetched again.
    const cached = path.join(cache, 'remote', sha(BASE.replace('name: base', 'name: second')), 'exp.yaml');
    fs.writeFileSync(cached, BASE.replace('name: base', 'name: tampered'));
    expect(await name()).toBe('second');
    expect(web.hits('/reload/exp.yaml')).toBe(4);
    // Content-addressed: each version's bytes under their sha256.
    const dirs = fs.readdirSync(path.join(cache, 'remote')).filter((d) => /^[0-9a-f]{64}$/.test(d));
    expect(dirs).toEqual(
      expect.arrayContaining([
        sha(BASE.replace('name: base', 'name: first')),
        sha(BASE.replace('name: base', 'name: second')),
      ]),
    );
  });

  test('a file that is not there: the URL and the HTTP status', async () => {
    const r = await xp(['check', `${web.url}/nothing.yaml`]);
    expect(r.exitCode).not.toBe(0);
    expect(r.stderr).toBe(`${web.url}/nothing.yaml: cannot fetch: HTTP 404 Not Found`);
  });

  test('weights that cannot be fetched: the field, the URL and why, at the line that names them', async () => {
    const url = web.put('/weights-404/exp.yaml', BASE.replace('nsfwjs', 'missing.h5').replace(/sweep:[\s\S]*$/, ''));
    const r = await xp(['check', url]);
    expect(r.stderr.split('\n')).toEqual([
      `Downloading the backbone weights ${web.url}/weights-404/missing.h5 into the cache`,
      `${url}:3:41: backbone.weights: cannot fetch ${web.url}/weights-404/missing.h5: HTTP 404 Not Found. Check the URL, or download the .h5 file and give its path.`,
    ]);
    expect(r.exitCode).toBe(2);
  });

  test('a redirect to a plain http:// URL of another host is refused, as that URL would be', async () => {
    const r = await xp(['check', `${web.url}/redirect.yaml`]);
    expect(r.stderr).toBe(
      `${web.url}/redirect.yaml: cannot fetch: it redirects to http://example.com/exp.yaml, and plain http:// is refused for example.com (only 127.0.0.1, ::1 and localhost may be fetched over http, as Deno does); use https://example.com/exp.yaml`,
    );
    expect(r.exitCode).toBe(2);
  });
});

test('xp config --origins: each value with the file:line that wrote it, the flag, or default', async () => {
  const baseUrl = web.put('/origins/base.yaml', BASE);
  const file = write('origins/exp.yaml', `extends: ${baseUrl}\nname: origins\nhead: {units: [32]}\n`);
  const r = await xp(['config', file, '--origins', '--set', 'head.dropout=0.3']);
  expect(r.exitCode, r.stderr).toBe(0);
  const lines = r.stdout.split('\n');
  const line = (re: RegExp) => lines.find((l) => re.test(l));
  expect(lines[0]).toBe(`# Resolved experiment from ${file}, extending ${baseUrl}`);
  expect(line(/^name:/)).toBe(`name: origins # ${file}:2:7`);
  expect(line(/^ {2}units:/)).toBe(`  units: [ 32 ] # ${file}:3:15`);
  expect(line(/^ {2}pooling:/)).toBe(`  pooling: avg # ${baseUrl}:5:12 (extended by ${file})`);
  expect(line(/^ {2}dropout:/)).toBe('  dropout: 0.3 # --set head.dropout=0.3');
  expect(line(/^ {2}activation:/)).toBe('  activation: relu # default');
  expect(line(/^ {4}optimizer\.learning_rate:/)).toBe(
    `    optimizer.learning_rate: [ 0.01, 0.001 ] # ${baseUrl}:10:28 (extended by ${file})`,
  );
  // Without --origins: plain YAML that loads back to the same experiment.
  const plain = await xp(['config', file]);
  expect(plain.stdout).not.toMatch(/ # /);
});
