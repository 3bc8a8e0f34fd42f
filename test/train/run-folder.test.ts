// Which interrupted runs `xp run --resume` continues, read from run folders alone (no training): per trial the
// latest backup of its config by a process that no longer runs, and a group split where its trials cannot
// resume at the same epoch.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { loadExperiment } from '../../src/config/load.ts';
import { planResume, sayResumable } from '../../src/run/trials.ts';
import { experimentHeader, findResumable } from '../../src/train/run-folder.ts';
import { groupTrials } from '../../src/train/sharing.ts';
import { tmp, writeExperiment } from './helpers.ts';

const runs = path.join(tmp, 'resume-runs');
const previous = process.env.XP_RUNS_DIR;
process.env.XP_RUNS_DIR = runs;
afterEach(() => fs.rmSync(runs, { recursive: true, force: true }));

/** A run folder as an interrupted run leaves it: experiment.yaml's header and a backup after `epoch` epochs. */
function runFolder(
  name: string,
  runId: string,
  configHash: string,
  backup?: { epoch: number; pid?: number; at: number },
) {
  const runDir = path.join(runs, name, runId);
  fs.mkdirSync(runDir, { recursive: true });
  fs.writeFileSync(path.join(runDir, 'experiment.yaml'), `${experimentHeader(configHash, 'x.yaml')}\nname: ${name}\n`);
  if (backup) {
    fs.mkdirSync(path.join(runDir, 'backup'));
    const state = path.join(runDir, 'backup', 'state.json');
    fs.writeFileSync(
      state,
      JSON.stringify({ format: 1, epoch: backup.epoch, pid: backup.pid, host: backup.pid ? os.hostname() : undefined }),
    );
    fs.writeFileSync(path.join(runDir, 'backup', 'tensors.bin'), '');
    fs.utimesSync(state, backup.at, backup.at);
  }
  return runDir;
}

describe('resumable runs', () => {
  it('the latest backup of the same config by a process that has ended; none of a live process or another config', () => {
    runFolder('exp', 'a', 'aaaa', { epoch: 1, at: 1000 });
    const latest = runFolder('exp', 'b', 'aaaa', { epoch: 3, at: 2000 });
    runFolder('exp', 'c', 'aaaa'); // finished: no backup
    runFolder('exp', 'd', 'bbbb', { epoch: 2, at: 3000 });
    runFolder('exp', 'e', 'aaaa', { epoch: 2, at: 4000, pid: process.ppid }); // its process still runs
    expect(findResumable(runs, 'exp', 'aaaa')).toEqual({ runId: 'b', runDir: latest, epoch: 3 });
    expect(findResumable(runs, 'exp', 'cccc')).toBeUndefined();
    expect(findResumable(runs, 'other', 'aaaa')).toBeUndefined();
  });

  it('a sweep resumes the trials that have a backup and trains the others from the start, in separate groups', async () => {
    const loaded = await loadExperiment(
      writeExperiment(
        'resume-sweep',
        `head: {pooling: avg, units: [8]}
optimizer: {name: adam, learning_rate: 0.001}
training: {epochs: 3, steps_per_epoch: 2}
sweep: {parameters: {head.dropout: [0.1, 0.2, 0.3]}}`,
      ),
    );
    const [one, two, three] = loaded.trials;
    expect(groupTrials(loaded.trials, true)).toHaveLength(1);
    const dir = runFolder('resume-sweep', 'r1', one.configHash, { epoch: 2, at: 1000 });
    runFolder('resume-sweep', 'r3', three.configHash, { epoch: 2, at: 1000 });
    const lines: string[] = [];
    const { groups, resume } = planResume(groupTrials(loaded.trials, true), (l) => lines.push(l));
    expect(groups.map((g) => g.map((t) => t.index))).toEqual([[one.index, three.index], [two.index]]);
    expect(resume.get(one.index)).toMatchObject({ runDir: dir, epoch: 2 });
    expect(resume.has(two.index)).toBe(false);
    expect(lines.filter((l) => l.startsWith('Resuming '))).toHaveLength(2);
    expect(lines.find((l) => l.startsWith(`Nothing to resume for ${two.name}`))).toMatch(/training from the start$/);

    // Without --resume the run says what it could continue.
    const hints: string[] = [];
    sayResumable(loaded.trials, 'sweep.yaml', (l) => hints.push(l));
    expect(hints).toHaveLength(1);
    expect(hints[0]).toContain('`xp run sweep.yaml --resume` would continue the interrupted run of');
    expect(hints[0]).toContain(`${one.name} (after epoch 2`);
    expect(hints[0]).not.toContain(two.name);
  });

  it('a damaged latest backup is found as damaged: --resume refuses it, a run without --resume says so', async () => {
    const loaded = await loadExperiment(
      writeExperiment(
        'resume-damaged',
        `head: {pooling: avg, units: [8]}
optimizer: {name: adam, learning_rate: 0.001}
training: {epochs: 3, steps_per_epoch: 2}`,
      ),
    );
    const [trial] = loaded.trials;
    runFolder('resume-damaged', 'old', trial.configHash, { epoch: 1, at: 1000 });
    const damaged = runFolder('resume-damaged', 'new', trial.configHash, { epoch: 2, at: 2000 });
    fs.writeFileSync(path.join(damaged, 'backup', 'state.json'), '{"format": 1, "ep');
    expect(findResumable(runs, 'resume-damaged', trial.configHash)).toMatchObject({
      runDir: damaged,
      backupDir: path.join(damaged, 'backup'),
      damaged: expect.stringMatching(/^state\.json is not valid JSON/),
    });
    expect(() => planResume([[trial]], () => {})).toThrow(
      `${path.join(damaged, 'backup')} holds a damaged backup (state.json is not valid JSON`,
    );
    const hints: string[] = [];
    sayResumable([trial], 'x.yaml', (l) => hints.push(l));
    expect(hints).toEqual([
      expect.stringMatching(
        /^Training .* from the start; its latest interrupted run cannot be resumed: .* holds a damaged backup/,
      ),
    ]);
    // Removed, as the error says: the older run resumes.
    fs.rmSync(path.join(damaged, 'backup'), { recursive: true });
    expect(findResumable(runs, 'resume-damaged', trial.configHash)).toMatchObject({ runId: 'old', epoch: 1 });
  });
});

afterAll(() => {
  if (previous === undefined) delete process.env.XP_RUNS_DIR;
  else process.env.XP_RUNS_DIR = previous;
});
