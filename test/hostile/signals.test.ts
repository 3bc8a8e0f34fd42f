// Signals and the process tree, as a user meets them: real `xp` processes, real (tiny) training, real MLflow.
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { execa } from 'execa';
import { afterAll, expect, test } from 'vitest';
import { createClient } from '../../src/tracking/client.ts';
import { openJournal } from '../../src/tracking/journal.ts';
import { startServer } from '../../src/tracking/server.ts';
import { until, alive } from './process.ts';

const root = path.resolve(import.meta.dirname, '../..');
const bin = path.join(root, 'bin', 'xp.js');
const shared = path.resolve(root, '../shared/datasets/cats_and_dogs_filtered');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'xp-signals-'));
const leftovers: (() => unknown)[] = [];
afterAll(async () => {
  for (const cleanup of leftovers.splice(0)) await cleanup();
  fs.rmSync(tmp, { recursive: true, force: true });
}, 60_000);

function experiment(name: string, epochs: number, steps = 2): string {
  const file = path.join(tmp, `${name}.yaml`);
  fs.writeFileSync(
    file,
    `name: ${name}
data: {train: ${shared}/train, validation: ${shared}/validation, image_size: [64, 64], batch_size: 4, max_per_class: 4}
backbone: {name: mobilenet_v2, weights: nsfwjs, cut_layer: block_2_add}
head: {pooling: avg, units: [4], dropout: 0.2}
optimizer: {name: adam, learning_rate: 0.001}
training: {epochs: ${epochs}, steps_per_epoch: ${steps}, validation_steps: 1}
`,
  );
  return file;
}

const xp = (args: string[], env: Record<string, string> = {}) =>
  execa(process.execPath, [bin, ...args], {
    reject: false,
    cwd: root,
    env: { XP_RUNS_DIR: path.join(tmp, 'runs'), ...env },
  });

const childrenOf = (pid: number): number[] => {
  const list = fs.readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim();
  return list ? list.split(/\s+/).map(Number) : [];
};

test('SIGKILL of `xp` takes its training child along within seconds', async () => {
  const parent = xp(['run', experiment('orphan', 10_000, 20), '--no-track', '-q']);
  await until(parent, 'Epoch 2/');
  const [child] = childrenOf(parent.pid!);
  expect(child).toBeGreaterThan(0);
  leftovers.push(() => alive(child) && process.kill(child, 'SIGKILL'));
  parent.kill('SIGKILL');
  await parent;
  const deadline = Date.now() + 10_000;
  while (alive(child) && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 100));
  expect(alive(child)).toBe(false);
}, 120_000);

test('SIGKILL of the process that runs a sweep with --parallel takes its worker processes along within seconds', async () => {
  // Epochs far longer than the wait below: a worker that outlived its parent would not even write a line.
  const file = experiment('orphan-parallel', 2, 100_000);
  fs.appendFileSync(file, 'sweep: {head.units: [[4], [8]]}\n');
  const supervisor = xp(['run', file, '--no-track', '--parallel', '2', '--no-share']);
  await until(supervisor, /\[worker \d\] Backbone[\s\S]*\[worker \d\] Backbone/);
  const [cli] = childrenOf(supervisor.pid!);
  const workers = childrenOf(cli);
  expect(workers).toHaveLength(2);
  leftovers.push(() => {
    for (const pid of [cli, ...workers]) if (alive(pid)) process.kill(pid, 'SIGKILL');
  });
  process.kill(cli, 'SIGKILL');
  const deadline = Date.now() + 15_000;
  while (workers.some(alive) && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 100));
  expect(workers.filter(alive)).toEqual([]);
  await supervisor;
}, 120_000);

test('a double Ctrl-C journals the run KILLED, writes its history and exits; `xp sync` closes the run in MLflow', async () => {
  // A tracking server that accepts connections and never answers: the worst case for waiting.
  const sockets: net.Socket[] = [];
  const silent = net.createServer((socket) => sockets.push(socket));
  await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
  leftovers.push(() => {
    for (const socket of sockets) socket.destroy();
    silent.close();
  });
  const uri = `http://127.0.0.1:${(silent.address() as net.AddressInfo).port}`;

  const run = xp(['run', experiment('double-ctrl-c', 1000), '-q'], { MLFLOW_TRACKING_URI: uri });
  await until(run, 'Epoch 2/');
  run.kill('SIGINT');
  await until(run, 'Interrupted:');
  await new Promise((resolve) => setTimeout(resolve, 500));
  const second = Date.now();
  run.kill('SIGINT');
  const result = await run;
  expect(Date.now() - second).toBeLessThan(10_000);
  expect(result.exitCode).toBe(130);
  expect(result.stderr).not.toMatch(/\n\s+at /);

  const dir = path.join(tmp, 'runs', 'double-ctrl-c');
  const [runDir] = fs.readdirSync(dir).map((name) => path.join(dir, name));
  expect(fs.existsSync(path.join(runDir, 'history.csv'))).toBe(true);
  const end = openJournal(runDir)
    .records()
    .find((record) => record.kind === 'end');
  expect(end, JSON.stringify(end) + result.stdout.slice(-800)).toMatchObject({ kind: 'end', status: 'KILLED' });

  const server = await startServer({ storeDir: path.join(tmp, 'mlflow'), timeoutMs: 120_000 });
  leftovers.push(() => server.stop());
  const sync = await xp(['sync', runDir, '--to', server.url]);
  expect(sync.exitCode, sync.stderr + sync.stdout).toBe(0);
  const info = (await createClient(server.url).getRun(openJournal(runDir).runRef()!.runId)).info;
  expect(info.status).toBe('KILLED');
  expect(Number(info.end_time)).toBe(end!.kind === 'end' ? end!.endTime : -1);
}, 240_000);

test('`xp run` prints no TensorFlow start-up lines; XP_DEBUG=1 brings them back', async () => {
  const file = experiment('quiet', 1);
  // Which lines TensorFlow prints depends on the CPU (on one without AVX-512, oneDNN is off and says nothing):
  // turning oneDNN on makes it print its INFO line on any x86 CPU.
  const loud = { TF_ENABLE_ONEDNN_OPTS: '1' };
  const quiet = await xp(['run', file, '--no-track', '-q'], loud);
  expect(quiet.exitCode, quiet.stderr).toBe(0);
  expect(quiet.stderr).not.toMatch(/absl::InitializeLog|oneDNN|cpu_feature_guard|rebuild TensorFlow/);
  const debug = await xp(['run', file, '--no-track', '-q'], { ...loud, XP_DEBUG: '1' });
  expect(debug.stderr).toMatch(/absl::InitializeLog|oneDNN/);
}, 120_000);

/** Processes whose command line holds `text`, and those in the process group of each: pid -> command line. */
function processesOf(text: string): { leaders: number[]; group: (leader: number) => number[] } {
  const all = fs
    .readdirSync('/proc')
    .filter((name) => /^\d+$/.test(name))
    .flatMap((name) => {
      try {
        const cmdline = fs.readFileSync(`/proc/${name}/cmdline`, 'utf8').replaceAll('\0', ' ');
        // /proc/<pid>/stat: pid (comm) state ppid pgrp ...; comm may hold spaces, so read after its ')'.
        const stat = fs.readFileSync(`/proc/${name}/stat`, 'utf8');
        const pgrp = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[2]);
        return [{ pid: Number(name), cmdline, pgrp }];
      } catch {
        return [];
      }
    });
  return {
    leaders: all.filter((p) => p.cmdline.includes(text) && p.pgrp === p.pid).map((p) => p.pid),
    group: (leader) => all.filter((p) => p.pgrp === leader).map((p) => p.pid),
  };
}

for (const [command, signal] of [
  ['ui', 'SIGINT'],
  ['ui', 'SIGTERM'],
  ['sync', 'SIGINT'],
] as const) {
  test(`\`xp ${command}\` stopped by ${signal} while it starts MLflow leaves no MLflow process behind and its port free`, async () => {
    const runs = path.join(tmp, `${command}-${signal}`, 'runs');
    const store = path.join(runs, 'mlflow');
    // `xp sync` starts the store's server for a journal that logs to it.
    const args =
      command === 'ui'
        ? ['ui']
        : (() => {
            const runDir = path.join(runs, 'e', 'r');
            openJournal(runDir).append({
              kind: 'run',
              experimentName: 'e',
              runName: 'r',
              startTime: Date.now(),
              runKey: 'k',
              tags: {},
              store,
              pid: process.pid,
              host: os.hostname(),
            });
            return ['sync', runDir];
          })();
    const child = xp(args, { XP_RUNS_DIR: runs });
    leftovers.push(() => child.kill('SIGKILL'));
    // MLflow is spawned (its own process group, named by the store) and not yet answering.
    let leader: number | undefined;
    const deadline = Date.now() + 60_000;
    while (!leader && Date.now() < deadline) {
      [leader] = processesOf(store).leaders;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    expect(leader, 'the MLflow server process').toBeDefined();
    const port = Number(
      /--port (\d+)/.exec(fs.readFileSync(`/proc/${leader}/cmdline`, 'utf8').replaceAll('\0', ' '))![1],
    );
    leftovers.push(() => {
      for (const pid of processesOf(store).group(leader!)) process.kill(pid, 'SIGKILL');
    });
    expect(fs.existsSync(path.join(store, 'server.json')), 'MLflow still starting').toBe(false);
    child.kill(signal);
    const r = await child;
    expect(r.stderr).not.toMatch(/\n\s+at /);
    const gone = Date.now() + 15_000;
    while (processesOf(store).group(leader!).length && Date.now() < gone)
      await new Promise((resolve) => setTimeout(resolve, 100));
    expect(processesOf(store).group(leader!)).toEqual([]);
    const free = await new Promise<boolean>((resolve) => {
      const probe = net.createServer().once('error', () => resolve(false));
      probe.listen(port, '127.0.0.1', () => probe.close(() => resolve(true)));
    });
    expect(free, `port ${port} free`).toBe(true);
  }, 120_000);
}
