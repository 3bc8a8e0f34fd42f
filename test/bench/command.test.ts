// `xp bench` as a user meets it: its help says how long each mode takes, and its figures go under the folder it runs
// in, not into the clone xp is installed from.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execa } from 'execa';
import { expect, test } from 'vitest';
import { resultsDir } from '../../bench/run.ts';

const root = path.resolve(import.meta.dirname, '../..');

test('`xp bench --help` says how long a whole bench and each of its modes take', async () => {
  const r = await execa(process.execPath, [path.join(root, 'bin', 'xp.js'), 'bench', '--help']);
  const lines = r.stdout.split('\n');
  expect(lines[2]).toMatch(/\(about \d+ min\)$/);
  for (const flag of ['--quick', '--full', '--no-keras', '--no-sweep', '--only-sweep'])
    expect(lines.find((line) => line.trimStart().startsWith(flag))).toMatch(
      /\((about (\d+ min|an hour)|a few minutes)[;) ]/,
    );
});

test('the figures go to ./bench-results of the current folder, not into the clone', () => {
  const here = process.cwd();
  const elsewhere = fs.realpathSync(fs.mkdtempSync(path.join(os.tmpdir(), 'xp-bench-cwd-')));
  try {
    process.chdir(elsewhere);
    expect(resultsDir()).toBe(path.join(elsewhere, 'bench-results'));
  } finally {
    process.chdir(here);
    fs.rmSync(elsewhere, { recursive: true, force: true });
  }
});
