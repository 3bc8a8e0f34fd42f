// Every exit code the README names is the one the process returns: problems in files from `xp check` (2), `xp fmt
// --check` and a file `xp fmt` cannot parse (1), a remote file or weights whose bytes no longer match xp.lock (1, from
// `xp run`, `xp check` and `xp config`, whichever fetched them), a sandbox refusal (2). Files from the web are served
// on 127.0.0.1; each command runs as a user runs it, through bin/xp.js.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startFileServer, type FileServer } from '../remote/helpers.ts';

const root = path.resolve(import.meta.dirname, '../..');
const shared = path.resolve(root, '../shared/datasets/cats_and_dogs_filtered');
const tmp = fs.realpathSync(fs.mkdtempSync(path.join(os.tmpdir(), 'xp-exit-codes-')));
let web: FileServer;
beforeAll(async () => {
  web = await startFileServer();
});
afterAll(async () => {
  await web.close();
  fs.rmSync(tmp, { recursive: true, force: true });
});

const xp = (args: string[], cwd = tmp) =>
  execa(process.execPath, [path.join(root, 'bin', 'xp.js'), ...args], {
    reject: false,
    cwd,
    env: { XP_CACHE_DIR: path.join(tmp, 'cache'), XP_RUNS_DIR: path.join(tmp, 'runs') },
  });

// Data by url: no folder is looked at, so only the fields under test can fail.
const EXPERIMENT = `name: exit-codes
data: {url: https://example.com/d.zip, train: d/train, validation: d/validation}
backbone: {name: mobilenet_v2, cut_layer: block_2_add}
`;

function write(name: string, text: string): string {
  const file = path.join(tmp, name);
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(file, text);
  return file;
}

describe('the exit codes the README names', () => {
  it('xp check: a problem in a file exits 2, one file:line:col line per problem', async () => {
    const r = await xp(['check', write('bad/exp.yaml', `${EXPERIMENT}head: {dropout: 1.5}\n`)]);
    expect(r.exitCode).toBe(2);
    expect(r.stderr).toMatch(/exp\.yaml:4:\d+: head\.dropout must be < 1 \(got 1\.5\)$/);
  });

  it('xp fmt --check: a file not in canonical form exits 1', async () => {
    const file = write(
      'fmt/exp.yaml',
      `backbone: {cut_layer: block_2_add, name: mobilenet_v2}\n${EXPERIMENT.split('\n').slice(0, 2).join('\n')}\n`,
    );
    const r = await xp(['fmt', '--check', file]);
    expect(r.exitCode).toBe(1);
    expect(r.stdout).toContain(file);
  });

  it('xp fmt: a file with YAML errors is left as it is, reported as file:line:col, exit 1', async () => {
    const text = 'name: x\nhead: {units: [1\n';
    const file = write('fmt/broken.yaml', text);
    const r = await xp(['fmt', file]);
    expect(r.exitCode).toBe(1);
    expect(r.stderr).toMatch(/broken\.yaml:\d+:\d+: YAML syntax error/);
    expect(fs.readFileSync(file, 'utf8')).toBe(text);
  });

  it('a remote experiment whose bytes changed since xp.lock pinned them: exit 1 from run, check and config', async () => {
    const project = path.join(tmp, 'remote-exp');
    fs.mkdirSync(project);
    const url = web.put('/exit/exp.yaml', EXPERIMENT);
    expect((await xp(['config', url], project)).exitCode).toBe(0);
    web.put('/exit/exp.yaml', `${EXPERIMENT}# changed\n`);
    for (const command of [
      ['config', url],
      ['check', url],
      ['run', url, '--no-track'],
    ]) {
      const r = await xp([...command, '--reload'], project);
      expect(r.exitCode, `xp ${command[0]}: ${r.stderr}`).toBe(1);
      expect(r.stderr).toContain(
        `xp ${command[0]}: ${url} does not match its entry in the lock file ${project}/xp.lock:`,
      );
      expect(r.stderr).toContain('rerun with --lock-write');
    }
  });

  it('remote weights whose bytes changed since xp.lock pinned them: exit 1, not a problem of the file', async () => {
    const url = web.put('/exit/weights.h5', 'not an HDF5 file, pinned all the same');
    const file = write('remote-weights/exp.yaml', EXPERIMENT.replace('cut_layer:', `weights: "${url}", cut_layer:`));
    // The first check pins the bytes, then finds them not to be a .h5 file: a problem of the file, exit 2.
    const first = await xp(['check', file]);
    expect(first.exitCode, first.stderr).toBe(2);
    expect(first.stderr).toContain('backbone.weights');
    web.put('/exit/weights.h5', 'other bytes');
    const r = await xp(['check', file, '--reload']);
    expect(r.exitCode, r.stderr).toBe(1);
    expect(r.stderr).toContain(`xp check: ${url} does not match its entry in the lock file`);
  });

  it('a file from the web that wants to read a local folder, without a grant and no terminal to ask: exit 2', async () => {
    const url = web.put(
      '/exit/reads.yaml',
      `name: reads\ndata: {train: "file://${shared}/train", validation: "file://${shared}/validation"}\nbackbone: {name: mobilenet_v2, cut_layer: block_2_add}\n`,
    );
    const r = await xp(['check', url, '--no-lock']);
    expect(r.exitCode, r.stderr).toBe(2);
    expect(r.stderr).toContain('--allow-read');
  });
});

describe('a reader that goes away', () => {
  it('(`xp config file | head -0`) ends the command with its own exit code, not an EPIPE stack trace', async () => {
    const file = write('pipe.yaml', EXPERIMENT);
    const child = execa(process.execPath, [path.join(root, 'bin', 'xp.js'), 'config', file], {
      reject: false,
      cwd: tmp,
    });
    // The reading end is closed before xp writes a byte.
    child.stdout!.destroy();
    const r = await child;
    expect(r.stderr).not.toMatch(/EPIPE|\n\s+at /);
    expect(r.exitCode).toBe(0);
  });
});
