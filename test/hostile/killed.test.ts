// A tracked run whose `xp` is killed with SIGKILL leaves its MLflow run RUNNING, with nobody to close it. `xp runs`
// must not show it as running, and the next `xp run` closes it. Real processes, real (tiny) training, the embedded
// MLflow server on the runs folder's own store, as a user has it.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execa } from 'execa';
import { afterAll, expect, test } from 'vitest';
import { openJournal } from '../../src/tracking/journal.ts';
import { stopKeptServer } from '../../src/tracking/server.ts';
import { until, alive } from './process.ts';

const root = path.resolve(import.meta.dirname, '../..');
const bin = path.join(root, 'bin', 'xp.js');
const shared = path.resolve(root, '../shared/datasets/cats_and_dogs_filtered');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'xp-killed-'));
const runs = path.join(tmp, 'runs');
afterAll(async () => {
  await stopKeptServer(path.join(runs, 'mlflow')); // the killed run's server, if it outlived it
  fs.rmSync(tmp, { recursive: true, force: true });
}, 60_000);

function experiment(name: string, epochs: number, steps: number): string {
  const file = path.join(tmp, `${name}.yaml`);
  fs.writeFileSync(
    file,
    `name: ${name}
data: {train: ${shared}/train, validation: ${shared}/validation, image_size: [32, 32], batch_size: 4, max_per_class: 4}
backbone: {name: mobilenet_v2, weights: nsfwjs, cut_layer: block_1_project_BN}
head: {pooling: avg, units: [4]}
optimizer: {name: adam, learning_rate: 0.001}
training: {epochs: ${epochs}, steps_per_epoch: ${steps}, validation_steps: 1}
`,
  );
  return file;
}

const env = { XP_RUNS_DIR: runs, MLFLOW_HTTP_REQUEST_MAX_RETRIES: '1' };
const xp = (args: string[]) => execa(process.execPath, [bin, ...args], { reject: false, cwd: tmp, env });

async function waitFor(what: string, check: () => boolean, ms = 60_000) {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
}

const rowsOf = async (name: string) => {
  const r = await xp(['runs', name, '--json']);
  expect(r.exitCode, r.stderr).toBe(0);
  return JSON.parse(r.stdout) as { status: string; runDir: string; gone?: { pid: number; status: string } }[];
};

test('a SIGKILLed run is shown as killed by `xp runs`, not RUNNING, and the next `xp run` closes it in MLflow', async () => {
  const run = xp(['run', experiment('killed', 1000, 50), '-q']);
  await until(run, 'Epoch 2/');
  const dir = path.join(runs, 'killed');
  const runDir = path.join(dir, fs.readdirSync(dir)[0]);
  // Its MLflow run exists (the journal knows its id) before the kill.
  await waitFor('the MLflow run', () => openJournal(runDir).runRef() !== undefined);
  const trainer = openJournal(runDir).lastStart()!.pid!;
  run.kill('SIGKILL');
  await run;
  await waitFor('the training process to go', () => !alive(trainer), 15_000);

  const [row] = await rowsOf('killed');
  expect(row).toMatchObject({ status: 'RUNNING', runDir, gone: { pid: trainer, status: 'KILLED' } });
  const table = await xp(['runs', 'killed']);
  expect(table.stdout).toMatch(/killed\s+KILLED, MLflow: RUNNING/);
  expect(table.stdout).toContain(`have lost their process (killed: pid ${trainer})`);

  const next = await xp(['run', experiment('next', 1, 1), '-q']);
  expect(next.exitCode, next.stderr).toBe(0);
  expect(next.stdout).toContain(
    `MLflow: the run in ${runDir} closed as KILLED: its process (${trainer}) ended before MLflow heard of it`,
  );
  const [closed] = await rowsOf('killed');
  expect(closed.status).toBe('KILLED');
  expect(closed.gone).toBeUndefined();
  // Closed once: the journal has one end, and a later run has nothing to close.
  expect(
    openJournal(runDir)
      .records()
      .filter((r) => r.kind === 'end'),
  ).toHaveLength(1);
  const again = await xp(['run', experiment('next', 1, 1), '-q', '--set', 'training.seed=2']);
  expect(again.stdout).not.toContain('closed as KILLED');
}, 600_000);

test("a SIGKILLed sweep's parent run is shown as killed by `xp runs`, and the next `xp run` closes it with its trials", async () => {
  const file = experiment('killed-sweep', 1000, 50);
  fs.appendFileSync(file, 'sweep: {head.units: [[4], [8]]}\n');
  const run = xp(['run', file, '-q']);
  await until(run, 'Epoch 2/');
  const dir = path.join(runs, 'killed-sweep');
  const runDirs = fs.readdirSync(dir).map((id) => path.join(dir, id));
  expect(runDirs).toHaveLength(2);
  await waitFor('the MLflow runs', () => runDirs.every((d) => openJournal(d).runRef() !== undefined));
  const trainers = runDirs.map((d) => openJournal(d).lastStart()!.pid!);
  // Both at once, as `kill -9` of the process group, the OOM killer and a power loss do: a trainer that outlives
  // `xp` by a moment closes the parent itself.
  for (const pid of new Set(trainers)) process.kill(pid, 'SIGKILL');
  run.kill('SIGKILL');
  await run;
  await waitFor('the training processes to go', () => !trainers.some(alive), 15_000);

  type Row = Awaited<ReturnType<typeof rowsOf>>[number] & { runId: string; tags: Record<string, string> };
  const sweepRows = async () => {
    const r = await xp(['runs', 'killed-sweep', '--all', '--json']);
    expect(r.exitCode, r.stderr).toBe(0);
    const rows = JSON.parse(r.stdout) as Row[];
    return { parent: rows.find((row) => row.tags['xp.kind'] === 'sweep')!, trials: rows.filter((row) => row.runDir) };
  };
  const before = await sweepRows();
  const owner = Number(before.parent.tags['xp.pid']);
  expect(alive(owner)).toBe(false);
  expect(before.parent).toMatchObject({ status: 'RUNNING', gone: { pid: owner, status: 'KILLED' } });
  expect(before.trials.map((row) => row.gone?.status)).toEqual(['KILLED', 'KILLED']);
  const table = await xp(['runs', 'killed-sweep', '--all']);
  expect(table.stdout).toMatch(/sweep head\.units\s+KILLED, MLflow: RUNNING/);

  const next = await xp(['run', experiment('after-sweep', 1, 1), '-q']);
  expect(next.exitCode, next.stderr).toBe(0);
  expect(next.stdout).toContain(
    `MLflow: the sweep parent run ${before.parent.runId} (sweep head.units) closed as KILLED: its process (${owner}) ended before MLflow heard of it.`,
  );
  const after = await sweepRows();
  expect([after.parent, ...after.trials].map((row) => [row.status, row.gone])).toEqual([
    ['KILLED', undefined],
    ['KILLED', undefined],
    ['KILLED', undefined],
  ]);
  const again = await xp(['run', experiment('after-sweep', 1, 1), '-q', '--set', 'training.seed=2']);
  expect(again.stdout).not.toContain('closed as KILLED');
}, 600_000);
