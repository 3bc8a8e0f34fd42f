// Credentials in URLs: a real MLflow behind basic auth (a proxy on 127.0.0.1 that answers 401 without the right
// `Authorization: Basic`), reached through MLFLOW_TRACKING_URI=http://user:password@..., `--set tracking.uri=...` and
// `xp sync --to`, as MLflow's own clients reach it. The runs must arrive, and the password must appear nowhere:
// not on the console, not in any file xp writes (run folders, journals, cache, home), not in anything it sends to
// MLflow (its whole store is searched), not in `xp config`, `--dry-run`, `xp check` or `xp runs`.
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import AdmZip from 'adm-zip';
import { execa, type ResultPromise } from 'execa';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { createClient } from '../../src/tracking/client.ts';
import { isHealthy } from '../../src/tracking/server.ts';
import {
  createDatabase,
  freePort,
  removeTempDirs as removeQueueDirs,
  startWorker as startQueueWorker,
  stopWorkers,
  sweepFile,
  tempDir as queueDir,
  type TestWorker,
  until,
  xp as queueXp,
} from '../queue/helpers.ts';
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

/** Every file under `dir` that holds one of the secrets, and which. */
function filesHoldingSecrets(dir: string, among = secrets): string[] {
  const found: string[] = [];
  for (const entry of fs.readdirSync(dir, { recursive: true, withFileTypes: true })) {
    if (!entry.isFile()) continue;
    const file = path.join(entry.parentPath, entry.name);
    const bytes = fs.readFileSync(file);
    for (const secret of among) if (bytes.includes(secret)) found.push(`${file} holds ${secret}`);
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

describe("a token as the tracking URI's user (http://TOKEN@host), as requests and curl send it", () => {
  const TOKEN = 'tok3n-SECRET-0123';
  const tokenSecrets = [TOKEN, Buffer.from(`${TOKEN}:`).toString('base64')];
  const masked = (port: number) => `http://***@127.0.0.1:${port}`;

  test('a run, xp runs, xp config and xp sync --to reach MLflow with Basic TOKEN:, and show and store the URL as ***@; no byte holds the token', async () => {
    const gate = await startBasicAuthProxy(server.url, TOKEN, '');
    try {
      const uri = `http://${TOKEN}@127.0.0.1:${gate.port}`;
      const before = outputs.length;
      const r = await xp(['run', 'tiny.yaml', '--quiet', '--set', 'name=secrets-token'], { MLFLOW_TRACKING_URI: uri });
      expect(r.exitCode, r.stdout + r.stderr).toBe(0);
      expect(r.stdout).toContain(`MLflow: ${masked(gate.port)} (env)`);
      expect(gate.refused).toBe(0);
      expect(gate.passed).toBeGreaterThan(0);
      const [run] = await runsOf('secrets-token');
      expect(run.info.status).toBe('FINISHED');
      const runs = await xp(['runs', 'secrets-token'], { MLFLOW_TRACKING_URI: uri });
      expect(runs.exitCode, runs.stderr).toBe(0);
      expect(runs.stdout).toContain(`run(s) in ${masked(gate.port)}`);
      const config = await xp(['config', 'tiny.yaml', '--set', `tracking.uri=${uri}`]);
      expect(config.stdout).toContain(`uri: ${masked(gate.port)}`);
      // Journaled for a server that is gone, then sent with `xp sync --to` the token's URL.
      const dead = await freePort();
      const offline = await xp(['run', 'tiny.yaml', '--quiet', '--set', 'name=secrets-token-later'], {
        MLFLOW_TRACKING_URI: `http://${TOKEN}@127.0.0.1:${dead}`,
        XP_TRACKING_END_TIMEOUT: '2',
      });
      expect(offline.exitCode, offline.stdout + offline.stderr).toBe(0);
      expect(offline.stdout + offline.stderr).toContain(`cannot deliver to ${masked(dead)}`);
      const [runId] = fs.readdirSync(path.join(work, 'runs', 'secrets-token-later'));
      const sync = await xp(['sync', path.join(work, 'runs', 'secrets-token-later', runId), '--to', uri]);
      expect(sync.exitCode, sync.stdout + sync.stderr).toBe(0);
      expect(sync.stdout).toContain(`to ${masked(gate.port)}`);
      expect((await runsOf('secrets-token-later'))[0].info.status).toBe('FINISHED');
      expect(gate.refused).toBe(0);

      expect([
        ...filesHoldingSecrets(work, tokenSecrets),
        ...filesHoldingSecrets(server.storeDir, tokenSecrets),
      ]).toEqual([]);
      const printed = outputs.slice(before).join('\n');
      for (const secret of tokenSecrets) expect(printed).not.toContain(secret);
    } finally {
      await gate.close();
    }
  }, 240_000);
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
    expect(fromEnv.stdout).toMatch(/^[0-9a-f]{8} {2}secrets +FINISHED /m);
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

describe('files fetched from URLs with user:password@', () => {
  test('an experiment, the file it extends and its data archive behind basic auth: fetched, pinned and cached with the password masked; the cached copy of a file that holds it is 0600', async () => {
    const files = new Map<string, Buffer>();
    let refused = 0;
    const expected = `Basic ${Buffer.from(`user:${PASSWORD}`).toString('base64')}`;
    const web = http.createServer((request, response) => {
      const body = files.get(request.url ?? '');
      if (request.headers.authorization !== expected) {
        refused++;
        response.writeHead(401, { 'www-authenticate': 'Basic realm="files"' }).end();
      } else if (body) response.writeHead(200, { 'content-length': body.length }).end(body);
      else response.writeHead(404).end();
    });
    await new Promise<void>((resolve) => web.listen(0, '127.0.0.1', resolve));
    const port = (web.address() as net.AddressInfo).port;
    try {
      const zip = new AdmZip();
      for (const split of ['train', 'validation'])
        for (const cls of ['cats', 'dogs'])
          for (let i = 0; i < 4; i++) {
            const name = `${cls.slice(0, -1)}.${split === 'train' ? i : 2000 + i}.jpg`;
            zip.addFile(`pets/${split}/${cls}/${name}`, fs.readFileSync(path.join(shared, split, cls, name)));
          }
      files.set('/pets.zip', zip.toBuffer());
      // The base names the archive with the password written in it: its cached copy holds it.
      files.set(
        '/base.yaml',
        Buffer.from(`data: {url: "http://user:${PASSWORD}@127.0.0.1:${port}/pets.zip", train: pets/train, validation: pets/validation, image_size: [96, 96], batch_size: 4}
backbone: {name: mobilenet_v2, weights: nsfwjs, cut_layer: block_2_add}
head: {pooling: avg, units: [4]}
training: {epochs: 1, steps_per_epoch: 2}
`),
      );
      files.set('/exp.yaml', Buffer.from('name: secrets-remote\nextends: base.yaml\n'));
      const dir = path.join(work, 'remote');
      fs.mkdirSync(dir);
      const url = `http://user:${PASSWORD}@127.0.0.1:${port}/exp.yaml`;
      const shownAt = (route: string) => `http://user:***@127.0.0.1:${port}${route}`;
      const r = await execa(process.execPath, [bin, 'run', url, '--no-track', '--quiet', '--no-backup'], {
        reject: false,
        cwd: dir,
        env: { HOME: home, XP_RUNS_DIR: path.join(dir, 'runs'), XP_CACHE_DIR: path.join(dir, 'cache') },
      });
      outputs.push(`${r.stdout}\n${r.stderr}`);
      expect(r.exitCode, r.stdout + r.stderr).toBe(0);
      expect(refused).toBe(0);
      const lock = JSON.parse(fs.readFileSync(path.join(dir, 'xp.lock'), 'utf8')) as { remote: Record<string, string> };
      expect(Object.keys(lock.remote).sort()).toEqual([
        shownAt('/base.yaml'),
        shownAt('/exp.yaml'),
        shownAt('/pets.zip'),
      ]);
      const [runId] = fs.readdirSync(path.join(dir, 'runs', 'secrets-remote'));
      const yaml = fs.readFileSync(path.join(dir, 'runs', 'secrets-remote', runId, 'experiment.yaml'), 'utf8');
      expect(yaml).toContain(`url: ${shownAt('/pets.zip')}`);
      // The one file that holds the password is the cached copy of the file that wrote it, and it is private.
      const holding = filesHoldingSecrets(dir).map((f) => f.split(' holds ')[0]);
      expect(holding).toHaveLength(1);
      expect(path.basename(holding[0])).toBe('base.yaml');
      expect(fs.statSync(holding[0]).mode & 0o777).toBe(0o600);
      // Again, --frozen: the lock, keyed by the masked URLs, has every entry the run needs.
      const again = await execa(
        process.execPath,
        [bin, 'run', url, '--no-track', '--quiet', '--no-backup', '--frozen'],
        {
          reject: false,
          cwd: dir,
          env: { HOME: home, XP_RUNS_DIR: path.join(dir, 'runs'), XP_CACHE_DIR: path.join(dir, 'cache') },
        },
      );
      outputs.push(`${again.stdout}\n${again.stderr}`);
      expect(again.exitCode, again.stdout + again.stderr).toBe(0);
      for (const secret of secrets)
        expect(`${r.stdout}${r.stderr}${again.stdout}${again.stderr}`).not.toContain(secret);
    } finally {
      web.closeAllConnections();
      await new Promise((resolve) => web.close(resolve));
    }
  }, 240_000);
});

describe('a queue and its server with passwords in their URLs', () => {
  const QUEUE_PASSWORD = 'queue-SECRET-pw';
  const DB_PASSWORD = 'db-SECRET-pw';
  const all = [...secrets, QUEUE_PASSWORD, DB_PASSWORD];
  let redis: ResultPromise | undefined;
  let xpServer: ResultPromise | undefined;
  let db: Awaited<ReturnType<typeof createDatabase>> | undefined;
  const workers: TestWorker[] = [];
  afterAll(async () => {
    await stopWorkers(workers);
    xpServer?.kill('SIGTERM');
    await xpServer;
    await db?.drop();
    redis?.kill('SIGKILL');
    await redis;
    removeQueueDirs();
  }, 60_000);

  /** Every string in Redis: each key and its values, whatever its type. */
  async function redisContents(port: number): Promise<string> {
    const script = `local out = {}
for _, k in ipairs(redis.call('KEYS', '*')) do
  local t = redis.call('TYPE', k).ok
  local values = {}
  if t == 'hash' then values = redis.call('HGETALL', k)
  elseif t == 'list' then values = redis.call('LRANGE', k, 0, -1)
  elseif t == 'zset' then values = redis.call('ZRANGE', k, 0, -1)
  elseif t == 'set' then values = redis.call('SMEMBERS', k)
  elseif t == 'string' then values = {redis.call('GET', k)}
  elseif t == 'stream' then
    for _, e in ipairs(redis.call('XRANGE', k, '-', '+')) do for _, f in ipairs(e[2]) do table.insert(values, f) end end
  end
  table.insert(out, k)
  for _, v in ipairs(values) do table.insert(out, v) end
end
return out`;
    const r = await execa('redis-cli', [
      '-p',
      String(port),
      '--no-auth-warning',
      '-a',
      QUEUE_PASSWORD,
      'eval',
      script,
      '0',
    ]);
    return r.stdout;
  }

  test('xp server --backend postgresql://user:pw@, xp worker and xp run --queue redis://:pw@: the job runs, no password is shown, stored or on a command line', async () => {
    const dir = queueDir('secrets');
    const redisPort = await freePort();
    redis = execa(
      'redis-server',
      ['-', '--port', String(redisPort), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir],
      { reject: false, stdout: 'ignore', stderr: 'ignore', input: `requirepass ${QUEUE_PASSWORD}\n` },
    );
    // The password goes in by a config file on stdin: not on redis-server's own command line.
    await until('redis-server', async () => {
      const ping = await execa(
        'redis-cli',
        ['-p', String(redisPort), '--no-auth-warning', '-a', QUEUE_PASSWORD, 'ping'],
        {
          reject: false,
        },
      );
      return ping.stdout === 'PONG';
    });
    const queue = `redis://:${QUEUE_PASSWORD}@127.0.0.1:${redisPort}`;
    const shownQueue = `redis://:***@127.0.0.1:${redisPort}`;

    db = await createDatabase(`xp_hostile_secrets_${process.pid}`);
    // Trust authentication on the test's PostgreSQL: a password in the URL is sent, and not needed.
    const backend = db.url.replace('postgresql://postgres@', `postgresql://postgres:${DB_PASSWORD}@`);
    const serverPort = await freePort();
    xpServer = execa(
      process.execPath,
      [
        bin,
        'server',
        '--backend',
        backend,
        '--artifacts',
        path.join(dir, 'artifacts'),
        '--host',
        '127.0.0.1',
        '--port',
        String(serverPort),
      ],
      { reject: false, all: true, cwd: dir },
    );
    let serverOutput = '';
    xpServer.all?.on('data', (chunk) => (serverOutput += chunk));
    const mlflow = `http://127.0.0.1:${serverPort}`;
    await until(
      'xp server',
      () => (xpServer?.exitCode !== null ? Promise.reject(new Error(serverOutput)) : isHealthy(mlflow)),
      120_000,
    );
    // No command line on the machine carries a password: `ps` shows them to every user. (xp's own processes, with the
    // test's arguments, are left out: the user typed those.)
    const lines = fs
      .readdirSync('/proc')
      .filter((pid) => /^\d+$/.test(pid))
      .map((pid) => {
        try {
          return fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').replaceAll('\0', ' ');
        } catch {
          return '';
        }
      })
      .filter((line) => /mlflow|uvicorn|redis-server/.test(line) && !line.includes(bin));
    expect(lines.length).toBeGreaterThan(0);
    expect(lines.filter((line) => all.some((secret) => line.includes(secret)))).toEqual([]);

    const authProxy = await startBasicAuthProxy(mlflow, 'user', PASSWORD);
    const tracking = `http://user:${PASSWORD}@127.0.0.1:${authProxy.port}`;
    try {
      // A worker has its own credentials for the server, as any MLflow client.
      const worker = startQueueWorker('s1', queue, { MLFLOW_TRACKING_URI: tracking, HOME: home });
      workers.push(worker);
      await until('worker ready', () => worker.output().includes('waiting for jobs'), 120_000);
      const file = sweepFile(
        dir,
        'queue-secrets',
        'training: {epochs: 1, steps_per_epoch: 2, validation_steps: 2}\nsweep: {head.dropout: [0.1, 0.3]}',
      );
      const submitEnv = { MLFLOW_TRACKING_URI: tracking, XP_RUNS_DIR: path.join(dir, 'submitter-runs'), HOME: home };
      const submitted = await queueXp(['run', file, '--queue', queue, '--wait', '--quiet'], submitEnv, dir);
      expect(submitted.exitCode, submitted.all).toBe(0);
      expect(submitted.all).toContain(`Queue ${shownQueue}: sweep `);
      const status = await queueXp(['queue', 'status', '--queue', queue], submitEnv, dir);
      expect(status.exitCode, status.all).toBe(0);
      const client = createClient(mlflow);
      const experiment = await client.getExperimentByName('queue-secrets');
      const runs = await client.searchRuns({ experimentIds: [experiment!.experiment_id] });
      expect(runs.map((r) => r.info.status)).toEqual(['FINISHED', 'FINISHED', 'FINISHED']);
      expect(authProxy.refused).toBe(0);

      const printed = [serverOutput, worker.output(), submitted.all, status.all].join('\n');
      expect(serverOutput).toContain(`backend postgresql://postgres:***@127.0.0.1:5432/`);
      const stored = [await redisContents(redisPort), JSON.stringify(runs)].join('\n');
      expect(stored).toContain(`http://user:***@127.0.0.1:${authProxy.port}`);
      for (const secret of all) {
        expect(printed).not.toContain(secret);
        expect(stored).not.toContain(secret);
      }
      const files = [dir, worker.dir].flatMap((d) => filesHoldingSecrets(d, all));
      expect(files).toEqual([]);
    } finally {
      await authProxy.close();
    }
  }, 420_000);
});
