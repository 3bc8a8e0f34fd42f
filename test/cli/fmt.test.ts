// `xp fmt` as a user runs it: real processes on a temporary folder of experiment files.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeEach, describe, expect, it } from 'vitest';

const root = path.resolve(import.meta.dirname, '../..');
const bin = path.join(root, 'bin', 'xp.js');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'xp-fmt-'));
const xp = (args: string[], cwd = tmp) => execa(process.execPath, [bin, 'fmt', ...args], { reject: false, cwd });

const UNFORMATTED =
  'training: {epochs: 2}\nbackbone: {cut_layer: block_2_add, name: mobilenet_v2}\nname: small # the run name\n';
const FORMATTED =
  'name: small # the run name\nbackbone: {name: mobilenet_v2, cut_layer: block_2_add}\ntraining: {epochs: 2}\n';

function write(file: string, text: string): string {
  const full = path.join(tmp, file);
  fs.mkdirSync(path.dirname(full), { recursive: true });
  fs.writeFileSync(full, text);
  return full;
}
const read = (file: string) => fs.readFileSync(path.join(tmp, file), 'utf8');

beforeEach(() => {
  fs.rmSync(tmp, { recursive: true, force: true });
  fs.mkdirSync(tmp);
  write('a.yaml', UNFORMATTED);
  write('nested/b.yml', UNFORMATTED);
  write('nested/done.yaml', FORMATTED);
  // Not experiments, or in folders xp fmt never searches: left alone.
  write('ci.yml', 'on: push\njobs: {test: {runs-on: ubuntu-latest}}\n');
  for (const skipped of ['node_modules/x', 'runs', '.git', '.venv/lib']) write(`${skipped}/c.yaml`, UNFORMATTED);
});
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

describe('xp fmt', () => {
  it('--check lists the experiment files under the current folder that would change, exits 1, and changes nothing', async () => {
    const r = await xp(['--check']);
    expect(r.exitCode).toBe(1);
    expect(r.stdout.split('\n').sort()).toEqual(['a.yaml', path.join('nested', 'b.yml')]);
    expect(r.stderr).toContain('2 of 3 files not formatted');
    expect(read('a.yaml')).toBe(UNFORMATTED);
    expect(read('nested/b.yml')).toBe(UNFORMATTED);
  });

  it('without files formats every experiment under the current folder, skipping node_modules, runs, hidden folders and other YAML', async () => {
    fs.chmodSync(path.join(tmp, 'a.yaml'), 0o640);
    fs.symlinkSync('a.yaml', path.join(tmp, 'link.yaml'));
    const r = await xp([]);
    expect(r.exitCode, r.stderr).toBe(0);
    expect(read('a.yaml')).toBe(FORMATTED);
    expect(read('nested/b.yml')).toBe(FORMATTED);
    expect(fs.statSync(path.join(tmp, 'a.yaml')).mode & 0o777).toBe(0o640);
    expect(fs.lstatSync(path.join(tmp, 'link.yaml')).isSymbolicLink()).toBe(true);
    expect(read('ci.yml')).toBe('on: push\njobs: {test: {runs-on: ubuntu-latest}}\n');
    for (const skipped of ['node_modules/x', 'runs', '.git', '.venv/lib'])
      expect(read(`${skipped}/c.yaml`)).toBe(UNFORMATTED);
    expect(fs.readdirSync(tmp).filter((f) => f.endsWith('.tmp'))).toEqual([]);
    const again = await xp(['--check']);
    expect(again.exitCode, again.stdout).toBe(0);
  });

  it('formats the files and folders it is given, any YAML file among them', async () => {
    const r = await xp(['ci.yml', 'nested']);
    expect(r.exitCode, r.stderr).toBe(0);
    expect(read('ci.yml')).toBe('on: push\njobs: {test: {runs-on: ubuntu-latest}}\n');
    expect(read('nested/b.yml')).toBe(FORMATTED);
    expect(read('a.yaml')).toBe(UNFORMATTED);
    // A linked file is formatted through the link: the link stays a link.
    fs.symlinkSync('a.yaml', path.join(tmp, 'link.yaml'));
    expect((await xp(['link.yaml'])).exitCode).toBe(0);
    expect(read('a.yaml')).toBe(FORMATTED);
    expect(fs.lstatSync(path.join(tmp, 'link.yaml')).isSymbolicLink()).toBe(true);
  });

  it('leaves a file with YAML errors untouched, reports file:line:col as xp check does, exits 1, and formats the others', async () => {
    const bad = 'name: bad\nbackbone: {name: mobilenet_v2\ntraining: {epochs: 2}\n';
    write('bad.yaml', bad);
    const r = await xp(['bad.yaml', 'a.yaml']);
    expect(r.exitCode).toBe(1);
    expect(r.stderr).toMatch(/^bad\.yaml:3:1: YAML syntax error: /m);
    expect(r.stderr).not.toMatch(/\n\s+at /);
    expect(read('bad.yaml')).toBe(bad);
    expect(read('a.yaml')).toBe(FORMATTED);
  });

  it('leaves the repository experiments as they are: they are formatted, and xp --help lists fmt', async () => {
    const r = await xp(['--check', 'experiments'], root);
    expect(r.exitCode, r.stdout).toBe(0);
    expect(r.stderr).toMatch(/^Checked \d+ files$/m);
    const help = await execa(process.execPath, [bin, '--help'], { reject: false });
    expect(help.stdout).toMatch(/^ {2}fmt +format experiment files/m);
  });
});
