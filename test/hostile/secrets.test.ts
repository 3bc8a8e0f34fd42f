// Credentials in URLs: a real MLflow behind basic auth (a proxy on 127.0.0.1 that answers 401 without the right
// `Authorization: Basic`), reached through MLFLOW_TRACKING_URI=http://user:password@..., `--set tracking.uri=...` and
// `xp sync --to`, as MLflow's own clients reach it. The runs must arrive, and the password must appear nowhere:
// not on the console, not in any file xp writes (run folders, journals, cache, home), not in anything it sends to
// MLflow (its whole store is searched), not in `xp config`, `--dry-run`, `xp check` or `xp runs`.
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { createClient } from '../../src/tracking/client.ts';
import {
  type AuthProxy,
  removeTempDirs,
  SERVER_TIMEOUT,
  startBasicAuthProxy,
  startTestServer,
  tempDir,
} from '../tracking/helpers.ts';

const root = path.resolve(import.meta.dirname, '../..');
const bin = path.join(root, 'bin', 'xp.js');
const shared = path.resolve(root, '../shared/datasets/cats_and_dogs_filtered');
const PASSWORD = 'hunter2-SECRET';
// Anything that would carry it: the password, and the Basic header built from it.
const secrets = [PASSWORD, Buffer.from(`user:${PASSWORD}`).toString('base64')];

const work = tempDir('secrets');
const home = path.join(work, 'home');
const outputs: string[] = [];
let server: Awaited<ReturnType<typeof startTestServer>>;
let proxy: AuthProxy;
let withPassword: string;

beforeAll(async () => {
  server = await startTestServer();
  proxy = await startBasicAuthProxy(server.url, 'user', PASSWORD);
  withPassword = `http://user:${PASSWORD}@127.0.0.1:${proxy.port}`;
  fs.mkdirSync(home);
  fs.writeFileSync(
    path.join(work, 'tiny.yaml'),
    `name: secrets
data: {train: ${shared}/train, validation: ${shared}/validation, image_size: [96, 96], batch_size: 8, max_per_class: 16}
backbone: {name: mobilenet_v2, weights: nsfwjs, cut_layer: block_2_add}
head: {pooling: avg, units: [8]}
training: {epochs: 1, steps_per_epoch: 2, validation_steps: 2}
`,
  );
}, SERVER_TIMEOUT);
afterAll(async () => {
  await proxy?.close();
  await server?.stop();
  removeTempDirs();
}, 60_000);

/** xp as a user runs it, in `work`, its home there too: everything it writes is under `work`. */
async function xp(args: string[], env: Record<string, string> = {}) {
  const r = await execa(process.execPath, [bin, ...args], {
    reject: false,
    cwd: work,
    env: {
      HOME: home,
      XP_RUNS_DIR: path.join(work, 'runs'),
      XP_CACHE_DIR: path.join(work, 'cache'),
      MLFLOW_HTTP_REQUEST_MAX_RETRIES: '1',
      MLFLOW_TRACKING_URI: '',
      ...env,
    },
  });
  outputs.push(`${r.stdout}\n${r.stderr}`);
  return r;
}

/** Every file under `dir` that holds a secret, with the byte offset of the first one found. */
function filesHoldingSecrets(dir: string): string[] {
  const found: string[] = [];
  for (const entry of fs.readdirSync(dir, { recursive: true, withFileTypes: true })) {
    if (!entry.isFile()) continue;
    const file = path.join(entry.parentPath, entry.name);
    const bytes = fs.readFileSync(file);
    for (const secret of secrets) if (bytes.includes(secret)) found.push(`${file} holds ${secret}`);
  }
  return found;
}

async function runsOf(experimentName: string) {
  const client = createClient(server.url);
  const experiment = await client.getExperimentByName(experimentName);
  return experiment ? client.searchRuns({ experimentIds: [experiment.experiment_id] }) : [];
}

const shown = (port: number) => `http://user:***@127.0.0.1:${port}`;

describe('a tracking URI with user:password@', () => {
  test('MLFLOW_TRACKING_URI: the run reaches MLflow through basic auth, and the console shows the URL masked', async () => {
    const r = await xp(['run', 'tiny.yaml', '--quiet'], { MLFLOW_TRACKING_URI: withPassword });
    expect(r.exitCode, r.stdout + r.stderr).toBe(0);
    expect(r.stdout).toContain(`MLflow: ${shown(proxy.port)} (env)`);
    expect(r.stdout).not.toMatch(/cannot deliver|NOT delivered/);
    expect(proxy.passed).toBeGreaterThan(0);
    expect(proxy.refused).toBe(0);
    const [run] = await runsOf('secrets');
    expect(run.info.status).toBe('FINISHED');
    expect(run.data.metrics?.map((m) => m.key)).toEqual(expect.arrayContaining(['loss', 'val_accuracy']));
    // The run's link is a page for a browser, which asks for the password itself.
    expect(r.stdout).toContain(`MLflow: http://127.0.0.1:${proxy.port}/#/experiments/`);
  }, 240_000);

  test('--set tracking.uri: the run reaches MLflow; experiment.yaml and the journal hold the URL masked', async () => {
    const r = await xp([
      'run',
      'tiny.yaml',
      '--quiet',
      '--set',
      `tracking.uri=${withPassword}`,
      '--set',
      'name=secrets-set',
    ]);
    expect(r.exitCode, r.stdout + r.stderr).toBe(0);
    expect(r.stdout).toContain(`MLflow: ${shown(proxy.port)} (experiment)`);
    const [run] = await runsOf('secrets-set');
    expect(run.info.status).toBe('FINISHED');
    const [runId] = fs.readdirSync(path.join(work, 'runs', 'secrets-set'));
    const folder = path.join(work, 'runs', 'secrets-set', runId);
    expect(fs.readFileSync(path.join(folder, 'experiment.yaml'), 'utf8')).toContain(`uri: ${shown(proxy.port)}`);
    expect(fs.readFileSync(path.join(folder, 'mlflow-journal.jsonl'), 'utf8')).toContain(shown(proxy.port));
  }, 240_000);

  test('a server that cannot be reached: every delivery error shows the URL masked; `xp sync --to` delivers later', async () => {
    const dead = await new Promise<number>((resolve) => {
      const probe = net.createServer().listen(0, '127.0.0.1', () => {
        const { port } = probe.address() as net.AddressInfo;
        probe.close(() => resolve(port));
      });
    });
    const r = await xp(['run', 'tiny.yaml', '--quiet', '--set', 'name=secrets-dead'], {
      MLFLOW_TRACKING_URI: `http://user:${PASSWORD}@127.0.0.1:${dead}`,
      XP_TRACKING_END_TIMEOUT: '2',
    });
    expect(r.exitCode, r.stdout + r.stderr).toBe(0);
    expect(r.stdout + r.stderr).toContain(`cannot deliver to ${shown(dead)}`);
    const [runId] = fs.readdirSync(path.join(work, 'runs', 'secrets-dead'));
    const folder = path.join(work, 'runs', 'secrets-dead', runId);
    const sync = await xp(['sync', folder, '--to', withPassword]);
    expect(sync.exitCode, sync.stdout + sync.stderr).toBe(0);
    expect(sync.stdout).toContain(`to ${shown(proxy.port)}`);
    const [run] = await runsOf('secrets-dead');
    expect(run.info.status).toBe('FINISHED');
  }, 240_000);

  test('xp config, --dry-run, xp check, xp runs and a file that writes the password show it masked', async () => {
    const set = ['--set', `tracking.uri=${withPassword}`];
    const config = await xp(['config', 'tiny.yaml', ...set, '--origins']);
    expect(config.exitCode, config.stderr).toBe(0);
    expect(config.stdout).toContain(`uri: ${shown(proxy.port)} # --set tracking.uri=${shown(proxy.port)}`);
    const dry = await xp(['run', 'tiny.yaml', '--dry-run', ...set]);
    expect(dry.exitCode, dry.stderr).toBe(0);
    expect(dry.stdout).toContain(`net   127.0.0.1:${proxy.port}  (tracking.uri`);
    const check = await xp(['check', 'tiny.yaml', ...set, '--set', 'head.dropout=3']);
    expect(check.exitCode).toBe(2);
    const runs = await xp(['runs'], { MLFLOW_TRACKING_URI: withPassword });
    expect(runs.exitCode, runs.stderr).toBe(0);
    expect(runs.stdout).toContain(`run(s) in ${shown(proxy.port)}`);
    fs.writeFileSync(path.join(work, 'own.yaml'), `extends: tiny.yaml\ntracking: {uri: "${withPassword}"}\n`);
    const own = await xp(['config', 'own.yaml']);
    expect(own.stdout).toContain(`uri: ${shown(proxy.port)}`);
    const bad = await xp(['config', 'tiny.yaml', '--set', `tracking.uri=ftp://user:${PASSWORD}@127.0.0.1/`]);
    expect(bad.stdout).toContain('ftp://user:***@127.0.0.1/');
  }, 60_000);

  test('after all of it, no byte xp wrote, printed or sent to MLflow holds the password', () => {
    // Files written with the user's password once: read by the test, not by xp. The file that wrote it holds it.
    const found = [...filesHoldingSecrets(work), ...filesHoldingSecrets(server.storeDir)].filter(
      (f) => !f.startsWith(path.join(work, 'own.yaml')),
    );
    expect(found).toEqual([]);
    expect(outputs.length).toBeGreaterThan(8);
    const printed = outputs.join('\n');
    for (const secret of secrets) expect(printed).not.toContain(secret);
  });
});

describe('MLflow credentials, as its Python client takes them', () => {
  test('MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD with a URL without user info; ~/.mlflow/credentials', async () => {
    const env = { MLFLOW_TRACKING_URI: proxy.url };
    const fromEnv = await xp(['runs', 'secrets'], {
      ...env,
      MLFLOW_TRACKING_USERNAME: 'user',
      MLFLOW_TRACKING_PASSWORD: PASSWORD,
    });
    expect(fromEnv.exitCode, fromEnv.stderr).toBe(0);
    expect(fromEnv.stdout).toMatch(/^secrets +FINISHED /m);
    const without = await xp(['runs', 'secrets'], env);
    expect(without.exitCode).not.toBe(0);
    expect(without.stderr).toMatch(/401/);
    const file = path.join(home, '.mlflow', 'credentials');
    fs.mkdirSync(path.dirname(file), { recursive: true });
    fs.writeFileSync(file, `[mlflow]\nmlflow_tracking_username = user\nmlflow_tracking_password = ${PASSWORD}\n`, {
      mode: 0o600,
    });
    try {
      const fromFile = await xp(['runs', 'secrets'], env);
      expect(fromFile.exitCode, fromFile.stderr).toBe(0);
    } finally {
      fs.rmSync(file);
    }
  }, 60_000);
});
