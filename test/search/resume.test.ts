// A search interrupted mid-round (SIGINT while a round trains) and run again with --resume: the interrupted trials
// are handed out again and continue from their backups, no trial is asked twice, and the study ends with exactly
// `trials` trials.
import fs from 'node:fs';
import path from 'node:path';
import { execa } from 'execa';
import { afterAll, describe, expect, it } from 'vitest';
import type { Outcome } from '../../src/run/trials.ts';
import { removeTempDirs, tempDir } from '../tracking/helpers.ts';
import { root, writeSearch, xpIn } from './helpers.ts';

const tmp = tempDir('search-resume');
const runs = path.join(tmp, 'runs');
afterAll(removeTempDirs);

const search = `
  method: tpe
  trials: 4
  batch: 2
  seed: 3
  head.dropout: {distribution: uniform, min: 0.0, max: 0.7}
  optimizer.learning_rate: {distribution: log_uniform, min: 1.0e-4, max: 1.0e-2}`;

/** The JSON lines of an xp run: its log lines and the summary's runs. */
function parse(stdout: string) {
  const events = stdout
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as Record<string, unknown>);
  const lines = events.filter((e) => e.event === 'log').map((e) => String(e.message));
  const outcomes = (events.find((e) => e.event === 'summary')?.runs ?? []) as Outcome[];
  return { lines, outcomes };
}

/** The study's trial table (written at the search's end beside its journal). */
function studyTable(experiment: string): string[][] {
  const [dir] = fs.readdirSync(path.join(runs, experiment)).filter((d) => d.startsWith('search-'));
  const csv = fs.readFileSync(path.join(runs, experiment, dir, 'report', 'trials.csv'), 'utf8');
  return csv
    .trim()
    .split('\n')
    .slice(1)
    .map((line) => line.split(','));
}

/** `xp run <file>` of a search, untracked, printing JSON lines to watch its epochs by. */
const startSearch = (file: string) =>
  execa(process.execPath, [path.join(root, 'bin', 'xp.js'), 'run', file, '--json', '--no-track'], {
    reject: false,
    cwd: root,
    env: { XP_RUNS_DIR: runs },
  });

describe('a search interrupted mid-round', () => {
  it('resumes its interrupted trials from their backups with --resume, asks no trial twice, and ends with `trials` trials', async () => {
    const file = writeSearch(tmp, 'resume', 'search-resume', search, 4);
    const first = startSearch(file);
    // SIGINT once round 1's trials have ended their second epoch: its backup and the first's are on disk.
    let out = '';
    let sent = false;
    first.stdout?.on('data', (d: Buffer) => {
      out += d.toString();
      if (sent || !out.split('\n').some((l) => l.startsWith('{"event":"epoch"') && JSON.parse(l).epoch === 2)) return;
      sent = true; // one SIGINT: a second would stop waiting for the runs' ends
      first.kill('SIGINT');
    });
    const ended = await first;
    expect(ended.exitCode, ended.stderr).toBe(130);
    const before = parse(ended.stdout);
    expect(before.lines.filter((l) => l.startsWith('Round '))).toHaveLength(1);
    const interrupted = before.outcomes;
    expect(interrupted).toHaveLength(2);
    for (const o of interrupted) {
      expect(o.status).toBe('KILLED');
      expect(o.history.length).toBeGreaterThanOrEqual(2);
      expect(o.history.length).toBeLessThan(4);
    }
    expect(before.lines.some((l) => /the study holds 0 finished, 0 stopped, 0 failed, 2 interrupted/.test(l))).toBe(
      true,
    );

    const again = await xpIn(runs, ['run', file, '--json', '--no-track', '--resume']);
    expect(again.exitCode, again.stderr).toBe(0);
    const after = parse(again.stdout);
    expect(after.lines).toContain(
      `Round 1: ${interrupted.map((o, i) => `trial ${i + 1} (interrupted before, again): ${o.name}`).join('; ')}`,
    );
    const rounds = after.lines.filter((l) => l.startsWith('Round '));
    expect(rounds).toHaveLength(2);
    expect(rounds[1]).toMatch(/^Round 2: trial 3: \S+ \S+; trial 4: \S+ \S+$/);
    for (const o of interrupted) {
      const resumedAt = o.history.length;
      expect(after.lines).toContain(`Resuming ${o.name} after epoch ${resumedAt} of 4: ${o.runDir}`);
      // The same run folder, trained on to the last epoch: resumed from its backup, not started again.
      const done = after.outcomes.find((r) => r.name === o.name);
      expect(done?.status).toBe('FINISHED');
      expect(done?.runDir).toBe(o.runDir);
      expect(done?.history).toHaveLength(4);
      expect(done?.history.slice(0, resumedAt)).toEqual(o.history);
    }
    expect(after.outcomes).toHaveLength(4);
    expect(new Set(after.outcomes.map((o) => o.name)).size).toBe(4);

    // The study: exactly four trials, numbered 0-3, each told once, none asked twice.
    const table = studyTable('search-resume');
    expect(table.map((cells) => [cells[0], cells[2]])).toEqual([
      ['0', 'COMPLETE'],
      ['1', 'COMPLETE'],
      ['2', 'COMPLETE'],
      ['3', 'COMPLETE'],
    ]);
    expect(new Set(table.map((cells) => `${cells[3]} ${cells[4]}`)).size).toBe(4);
    expect(after.lines.find((l) => l.includes('the study holds'))).toMatch(
      /the study holds 4 finished, 0 stopped, 0 failed$/,
    );
  });

  it('names its Optuna process when it dies mid-round, keeps the study, and --resume completes it', async () => {
    const file = writeSearch(tmp, 'died', 'search-died', search, 4);
    const first = startSearch(file);
    // Once round 1 trains, the study's Python process (this test's grandchild, found by its journal) is killed.
    let out = '';
    let killed: number | undefined;
    first.stdout?.on('data', (d: Buffer) => {
      out += d.toString();
      if (killed || !out.includes('"event":"epoch"')) return;
      killed = driverPid(path.join(runs, 'search-died'));
      if (killed) process.kill(killed, 'SIGKILL');
    });
    const ended = await first;
    expect(killed).toBeGreaterThan(0);
    expect(ended.exitCode).not.toBe(0);
    expect(ended.stderr).toMatch(/the search process \(.*optuna_driver\.py\) ended \(SIGKILL\)/);
    expect(ended.stderr).toMatch(
      /the study in \S+study\.journal keeps every result it was told: `xp run \S+died\.yaml --resume` continues it, its interrupted trials from their backups$/m,
    );

    const again = await xpIn(runs, ['run', file, '--json', '--no-track', '--resume']);
    expect(again.exitCode, again.stderr).toBe(0);
    const after = parse(again.stdout);
    expect(after.lines.find((l) => l.startsWith('Round 1: '))).toMatch(
      /^Round 1: trial 1 \(interrupted before, again\)/,
    );
    expect(studyTable('search-died').map((cells) => cells[2])).toEqual([
      'COMPLETE',
      'COMPLETE',
      'COMPLETE',
      'COMPLETE',
    ]);
  });
});

/** The pid of the optuna_driver.py process whose study is under `dir`, if one runs. */
function driverPid(dir: string): number | undefined {
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    let cmdline = '';
    try {
      cmdline = fs.readFileSync(`/proc/${entry}/cmdline`, 'utf8');
    } catch {
      continue;
    }
    if (cmdline.includes('optuna_driver.py') && cmdline.includes(dir)) return Number(entry);
  }
  return undefined;
}
