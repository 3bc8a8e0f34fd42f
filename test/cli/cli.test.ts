// The xp command line end to end, as a user runs it: real processes, real training, a real MLflow server.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createClient } from '../../src/tracking/client.ts';
import { startServer, type TrackingServer } from '../../src/tracking/server.ts';

const root = path.resolve(import.meta.dirname, '../..');
const bin = path.join(root, 'bin', 'xp.js');
const shared = path.resolve(root, '../shared/datasets/cats_and_dogs_filtered');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'xp-cli-'));
let server: TrackingServer;

const env = () => ({
  XP_RUNS_DIR: path.join(tmp, 'runs'),
  MLFLOW_TRACKING_URI: server.url,
  MLFLOW_HTTP_REQUEST_MAX_RETRIES: '1',
});
const xp = (args: string[], opts: { env?: Record<string, string> } = {}) =>
  execa(process.execPath, [bin, ...args], { reject: false, env: { ...env(), ...opts.env }, cwd: root });

function experiment(name: string, extra = ''): string {
  const file = path.join(tmp, `${name}.yaml`);
  fs.writeFileSync(
    file,
    `name: ${name}
description: a small experiment for the CLI tests
data: {train: ${shared}/train, validation: ${shared}/validation, image_size: [96, 96], batch_size: 8, max_per_class: 12}
backbone: {name: mobilenet_v2, weights: nsfwjs, cut_layer: block_2_add}
head: {pooling: avg, units: [8], dropout: 0.2}
augmentation: {rotation_range: 10, horizontal_flip: true}
optimizer: {name: adam, learning_rate: 0.001}
training: {epochs: 2, steps_per_epoch: 2, validation_steps: 2}
${extra}`,
  );
  return file;
}

beforeAll(async () => {
  server = await startServer({ storeDir: path.join(tmp, 'mlflow') });
});
afterAll(async () => {
  await server?.stop();
  fs.rmSync(tmp, { recursive: true, force: true });
});

describe('xp check', () => {
  it('exits 0 on every file in experiments/', async () => {
    const files = fs.readdirSync(path.join(root, 'experiments')).map((f) => path.join('experiments', f));
    const r = await xp(['check', ...files]);
    expect(r.exitCode, r.stderr).toBe(0);
    expect(r.stdout).toContain('quickstart.yaml: ok');
  });

  it('exits 2 with file:line:col and no stack trace on a malformed file', async () => {
    const file = path.join(tmp, 'bad.yaml');
    fs.writeFileSync(
      file,
      'name: bad\ndata: {train: x, validation: y}\nbackbone: {name: inception_v3, cut_layer: mixed7}\nhead:\n  dropout: 1.5\n',
    );
    const r = await xp(['check', file]);
    expect(r.exitCode).toBe(2);
    expect(r.stderr).toContain(`${file}:5:12: head.dropout must be < 1 (got 1.5)`);
    expect(r.stderr).not.toMatch(/\n\s+at /);
  });

  it('--help describes every command, and an unknown command is an error', async () => {
    const help = await xp(['--help']);
    for (const c of ['check', 'run', 'predict', 'evaluate', 'runs', 'ui', 'sync', 'bench'])
      expect(help.stdout).toContain(`  ${c}`);
    const runHelp = await xp(['run', '--help']);
    expect(runHelp.stdout).toContain('--dry-run');
    const bad = await xp(['chek']);
    expect(bad.exitCode).toBe(2);
    expect(bad.stderr).toContain('did you mean check?');
  });

  it('--help lists each flag once, with its argument and default', async () => {
    const runHelp = await xp(['run', '--help']);
    expect(runHelp.stdout).toMatch(/^ {2}--max-trials N +refuse sweeps of more than N trials \(default 10000\)$/m);
    expect(runHelp.stdout).toMatch(/^ {2}--parallel N +run N sweep trials at once in child processes \(default 1\)$/m);
    expect(runHelp.stdout).not.toContain('--only');
    const checkHelp = await xp(['check', '--help']);
    expect(checkHelp.stdout).toMatch(/^ {2}--max-trials N /m);
  });

  it('a malformed --set value is one line naming the flag, exit 2, no stack trace', async () => {
    const r = await xp(['check', 'experiments/quickstart.yaml', '--set', 'head.units=[1,2']);
    expect(r.exitCode).toBe(2);
    expect(r.stderr.trim()).toBe('--set head.units=[1,2: the value is not valid YAML: Flow sequence must end with a ]');
  });
});

describe('--set pins swept fields', () => {
  it('xp run --dry-run of the example sweep with both swept fields set is one trial, and says the flags pinned them', async () => {
    const r = await xp([
      'run',
      'experiments/dropout-epochs-sweep.yaml',
      '--set',
      'head.dropout=0.1',
      '--set',
      'training.epochs=2',
      '--dry-run',
    ]);
    expect(r.exitCode, r.stderr).toBe(0);
    expect(r.stdout).toContain('experiments/dropout-epochs-sweep.yaml: 1 trial in 1 group');
    expect(r.stdout).toContain(
      'pinned by --set head.dropout=0.1, --set training.epochs=2: the file sweeps those fields, this run does not',
    );
    expect(r.stdout).toMatch(/trial 1: dropout-epochs-sweep /);
  });
});

describe('xp run --verbose', () => {
  it('says how a native dense head trains with class weights, and not under the plain policy', async () => {
    const file = experiment('cli-verbose');
    // A flatten head: a large Dense, the native step's; one epoch of one step.
    const args = ['run', file, '--quiet', '--no-track', '--verbose', '--set', 'head.pooling=flatten'];
    args.push('--set', 'training.epochs=1', '--set', 'training.class_weight=balanced');
    const note =
      'class_weight or label_smoothing: a dense head trains with the native kernel, the layers after it differentiated under a gradient tape';
    const native = await xp(args);
    expect(native.exitCode, native.stderr + native.stdout).toBe(0);
    // Only where the kernels load (else the policy falls back, and says so on its own line).
    if (native.stdout.includes('acceleration: native')) expect(native.stdout).toContain(note);
    const plain = await xp(args, { env: { XP_ACCEL: 'plain' } });
    expect(plain.exitCode, plain.stderr + plain.stdout).toBe(0);
    expect(plain.stdout).toContain('acceleration: plain');
    expect(plain.stdout).not.toContain(note);
  });
});

describe('xp run with MLflow', () => {
  it('trains, logs every epoch, params, tags and artifacts, and predict/evaluate use the saved model', async () => {
    const r = await xp(['run', experiment('cli-single'), '--quiet']);
    expect(r.exitCode, r.stderr + r.stdout).toBe(0);
    expect(r.stdout).toMatch(/Epoch 2\/2/);
    expect(r.stdout).toMatch(/MLflow: http:\/\/127\.0\.0\.1:\d+\/#\/experiments\/\d+\/runs\/\w+/);
    const runId = r.stdout.match(/runs\/(\w{32})/)![1];
    const client = createClient(server.url);
    const run = await client.getRun(runId);
    expect(run.info.status).toBe('FINISHED');
    const history = await client.getMetricHistory(runId, 'val_accuracy');
    expect(history.map((m) => m.step).sort()).toEqual([1, 2]);
    const params = Object.fromEntries((run.data.params ?? []).map((p) => [p.key, p.value]));
    expect(params['head.dropout']).toBe('0.2');
    expect(params['backbone.cut_layer']).toBe('block_2_add');
    expect(Number(params.train_images)).toBe(24);
    const tags = Object.fromEntries((run.data.tags ?? []).map((t) => [t.key, t.value]));
    expect(tags['mlflow.note.content']).toBe('a small experiment for the CLI tests');
    expect(tags['xp.config_hash']).toMatch(/^[0-9a-f]{16}$/);
    const artifacts = (await client.listArtifacts(run.info.artifact_uri)).map((f) => f.path);
    expect(artifacts).toEqual(
      expect.arrayContaining([
        'experiment.yaml',
        'history.csv',
        'curves.png',
        'model',
        'confusion_matrix.json',
        'summary.txt',
      ]),
    );
    const csv = (await client.downloadArtifact(run.info.artifact_uri, 'history.csv')).toString();
    expect(csv.split('\n')[0]).toBe(
      'epoch,loss,accuracy,val_loss,val_accuracy,learning_rate,epoch_seconds,images_per_second',
    );

    const runDir = tags['xp.run_dir'];
    const cat = path.join(shared, 'validation/cats/cat.2000.jpg');
    const predicted = await xp(['predict', runDir, cat, '--json']);
    expect(predicted.exitCode, predicted.stderr).toBe(0);
    const p = JSON.parse(predicted.stdout.trim().split('\n')[0]);
    expect(['cats', 'dogs']).toContain(p.class);
    expect(p.probability).toBeGreaterThanOrEqual(0.5);
    const evaluated = await xp(['evaluate', runDir, path.join(shared, 'validation'), '--json']);
    expect(evaluated.exitCode, evaluated.stderr).toBe(0);
    const e = JSON.parse(evaluated.stdout);
    expect(e.images).toBe(1000);
    expect(e.confusion_matrix.flat().reduce((a: number, b: number) => a + b, 0)).toBe(1000);
    // A linked image is not followed, as in training, and the count says so.
    const linked = path.join(tmp, 'linked');
    for (const [cls, name] of [
      ['cats', 'cat.2000.jpg'],
      ['dogs', 'dog.2000.jpg'],
    ]) {
      fs.mkdirSync(path.join(linked, cls), { recursive: true });
      fs.copyFileSync(path.join(shared, 'validation', cls, name), path.join(linked, cls, name));
    }
    fs.symlinkSync(path.join(shared, 'validation/cats/cat.2001.jpg'), path.join(linked, 'cats', 'cat.2001.jpg'));
    const partial = await xp(['evaluate', runDir, linked, '--json']);
    expect(partial.exitCode, partial.stderr).toBe(0);
    expect(JSON.parse(partial.stdout).images).toBe(2);
    expect(partial.stderr).toContain(`warning: 1 symbolic link in ${linked} skipped (data.follow_links is false)`);

    const runs = await xp(['runs', 'cli-single']);
    expect(runs.exitCode, runs.stderr).toBe(0);
    expect(runs.stdout).toMatch(/cli-single\s+FINISHED/);
  });

  it('a sweep makes a parent run with nested trials, and a second run skips the FINISHED ones', async () => {
    const file = experiment('cli-sweep', 'sweep:\n  head.dropout: [0.1, 0.3]\n  training.epochs: [1, 2]\n');
    const dry = await xp(['run', file, '--dry-run']);
    expect(dry.stdout).toContain('4 trials in 1 group');
    expect(dry.stdout).toMatch(/trial 1: dropout=0\.1 epochs=1 .*trained as the first epochs of trial 2/);
    const first = await xp(['run', file, '--quiet']);
    expect(first.exitCode, first.stderr + first.stdout).toBe(0);
    const client = createClient(server.url);
    const exp = await client.getExperimentByName('cli-sweep');
    const runs = await client.searchRuns({ experimentIds: [exp!.experiment_id] });
    const tag = (r: (typeof runs)[number], k: string) => r.data.tags?.find((t) => t.key === k)?.value;
    const parents = runs.filter((r) => tag(r, 'xp.kind') === 'sweep');
    expect(parents).toHaveLength(1);
    const children = runs.filter((r) => tag(r, 'mlflow.parentRunId') === parents[0].info.run_id);
    expect(children.map((r) => r.info.run_name).sort()).toEqual([
      'dropout=0.1 epochs=1',
      'dropout=0.1 epochs=2',
      'dropout=0.3 epochs=1',
      'dropout=0.3 epochs=2',
    ]);
    expect(children.every((r) => r.info.status === 'FINISHED')).toBe(true);
    expect(tag(parents[0], 'xp.best_run_id')).toBeDefined();
    // the 1-epoch trial, trained as the first epoch of the 2-epoch one, has that epoch's metrics in its own run
    const byName = (name: string) => children.find((r) => r.info.run_name === name)!.info.run_id;
    const short = await client.getMetricHistory(byName('dropout=0.3 epochs=1'), 'val_loss');
    const long = await client.getMetricHistory(byName('dropout=0.3 epochs=2'), 'val_loss');
    expect(short.map((m) => m.step)).toEqual([1]);
    expect(long.map((m) => m.step).sort()).toEqual([1, 2]);
    expect(short[0].value).toBe(long.find((m) => m.step === 1)!.value);
    const second = await xp(['run', file, '--quiet', '--sweep', 'head.dropout=0.1,0.3,0.5']);
    expect(second.exitCode, second.stderr + second.stdout).toBe(0);
    expect(second.stdout).toContain('Skipping 4 trial(s) already FINISHED');
    expect(second.stdout).toMatch(/dropout=0\.5 epochs=2/);
  });

  it('--parallel 2 runs groups in two child processes, nested under one parent', async () => {
    const file = experiment('cli-parallel', 'sweep:\n  training.seed: [1, 2]\n');
    const r = await xp(['run', file, '--quiet', '--parallel', '2']);
    expect(r.exitCode, r.stderr + r.stdout).toBe(0);
    expect(r.stdout).toContain('in 2 processes');
    const client = createClient(server.url);
    const exp = await client.getExperimentByName('cli-parallel');
    const runs = await client.searchRuns({ experimentIds: [exp!.experiment_id] });
    const parent = runs.find((x) => x.data.tags?.some((t) => t.key === 'xp.kind'));
    const children = runs.filter((x) =>
      x.data.tags?.some((t) => t.key === 'mlflow.parentRunId' && t.value === parent?.info.run_id),
    );
    expect(children.map((c) => c.info.run_name).sort()).toEqual(['seed=1', 'seed=2']);
    expect(children.every((c) => c.info.status === 'FINISHED')).toBe(true);
    expect(parent?.info.status).toBe('FINISHED');
  });

  it('with MLflow unreachable, training goes on and `xp sync` delivers the journal afterwards, exactly once', async () => {
    const file = experiment('cli-offline');
    const dead = 'http://127.0.0.1:9'; // discard port: nothing listens
    const r = await xp(['run', file, '--quiet'], {
      env: { MLFLOW_TRACKING_URI: dead, MLFLOW_HTTP_REQUEST_MAX_RETRIES: '0' },
    });
    expect(r.exitCode, r.stderr + r.stdout).toBe(0);
    expect(r.stdout + r.stderr).toMatch(/xp sync/);
    const runDir = path.join(tmp, 'runs', 'cli-offline', fs.readdirSync(path.join(tmp, 'runs', 'cli-offline'))[0]);
    // The run logged to the dead server: `--to` sends its journal to the one that is up.
    const synced = await xp(['sync', runDir, '--to', server.url]);
    expect(synced.exitCode, synced.stderr + synced.stdout).toBe(0);
    const again = await xp(['sync', runDir, '--to', server.url]); // nothing left: no duplicates
    expect(again.exitCode, again.stderr + again.stdout).toBe(0);
    const client = createClient(server.url);
    const exp = await client.getExperimentByName('cli-offline');
    const [run] = await client.searchRuns({ experimentIds: [exp!.experiment_id] });
    expect(run.info.status).toBe('FINISHED');
    const history = await client.getMetricHistory(run.info.run_id, 'val_loss');
    expect(history.map((m) => m.step).sort()).toEqual([1, 2]);
  });

  it('xp ui serves the MLflow UI on the local store until Ctrl-C', async () => {
    const runs = path.join(tmp, 'ui-runs');
    const child = execa(process.execPath, [bin, 'ui'], {
      reject: false,
      env: { XP_RUNS_DIR: runs, MLFLOW_TRACKING_URI: '' },
      cwd: root,
    });
    const url = await new Promise<string>((resolve, reject) => {
      let out = '';
      child.stdout!.on('data', (d) => {
        out += d;
        const m = out.match(/MLflow UI at (http:\/\/127\.0\.0\.1:\d+)/);
        if (m) resolve(m[1]);
      });
      child.on('exit', () => reject(new Error(`xp ui exited: ${out}`)));
    });
    const page = await fetch(url);
    expect(page.status).toBe(200);
    expect(await page.text()).toMatch(/mlflow/i);
    child.kill('SIGINT');
    const r = await child;
    expect(r.exitCode).toBe(0);
    expect(fs.existsSync(path.join(runs, 'mlflow', 'mlflow.db'))).toBe(true);
  });

  it('Ctrl-C ends the run KILLED after saving what exists', async () => {
    const file = experiment('cli-killed', '');
    const child = execa(process.execPath, [bin, 'run', file, '--quiet', '--set', 'training.epochs=200'], {
      reject: false,
      env: env(),
      cwd: root,
    });
    let out = '';
    let sent = false;
    child.stdout!.on('data', (d) => {
      out += d;
      if (!sent && /Epoch 2\//.test(out)) {
        sent = true; // one Ctrl-C: a second one quits at once, as in Keras
        child.kill('SIGINT');
      }
    });
    const r = await child;
    expect(r.exitCode).toBe(130);
    const client = createClient(server.url);
    const exp = await client.getExperimentByName('cli-killed');
    const [run] = await client.searchRuns({ experimentIds: [exp!.experiment_id] });
    expect(run.info.status).toBe('KILLED');
    expect((await client.getMetricHistory(run.info.run_id, 'loss')).length).toBeGreaterThanOrEqual(1);
  });
});
