// A full disk under each place xp writes: the run folder during a run, the per-epoch backup, and a data set's
// download and unpacking. The disk is a small tmpfs mounted in a mount namespace of the xp process's own
// (`unshare -Urm`: no root needed, nothing mounted outside it); what xp left on it is copied out for the test to
// read. Each must end with one clear error naming the file and "no space left on device" and what to do, a
// non-zero exit and no stack trace, the run FAILED in MLflow (a real server, on a disk with room) and in `xp runs`,
// and nothing half-written left as if whole.
import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import AdmZip from 'adm-zip';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { mlflowBin } from '../../src/paths.ts';
import { createClient } from '../../src/tracking/client.ts';
import { openJournal } from '../../src/tracking/journal.ts';
import { isHealthy } from '../../src/tracking/server.ts';
import { bin, freePort, root, shared } from '../queue/helpers.ts';
import { SERVER_TIMEOUT, serverForFile, tempDir } from '../tracking/helpers.ts';

const work = tempDir('disk');
const mlflow = serverForFile();

/** Exit status of the namespace's shell when the tmpfs cannot be mounted. */
const NO_MOUNT = 97;

/**
 * `xp args` with `disk` a tmpfs of `size` (mount's size=, e.g. 2m), in a mount namespace of its own; afterwards
 * what is on the disk is copied to the returned `left` folder.
 */
async function onSmallDisk(size: string, name: string, args: string[], env: (disk: string) => Record<string, string>) {
  const disk = path.join(work, name, 'disk');
  const left = path.join(work, name, 'left');
  fs.mkdirSync(disk, { recursive: true });
  fs.mkdirSync(left, { recursive: true });
  const script = `mount -t tmpfs -o size=${size} tmpfs "$XP_TEST_DISK" || exit ${NO_MOUNT}; "$@"; status=$?; cp -a "$XP_TEST_DISK"/. "$XP_TEST_LEFT"/; exit $status`;
  const r = await execa('unshare', ['-Urm', 'sh', '-c', script, 'sh', process.execPath, bin, ...args], {
    reject: false,
    cwd: root,
    env: { XP_TEST_DISK: disk, XP_TEST_LEFT: left, MLFLOW_TRACKING_URI: mlflow().url, ...env(disk) },
  });
  expect(
    r.exitCode,
    `a tmpfs could not be mounted in a new mount namespace (unshare -Urm needs user namespaces, or root): ${r.stderr}`,
  ).not.toBe(NO_MOUNT);
  // Paths xp printed are the disk's; the test reads the copy.
  return { ...r, disk, left, inLeft: (file: string) => path.join(left, path.relative(disk, file)) };
}

/** One clear error naming `file` (a RegExp of it) and the full disk, what to do, and no stack trace. */
function expectDiskFull(r: { exitCode?: number; stderr: string }, file: RegExp, variable: string, command = 'run') {
  expect(r.exitCode, r.stderr).toBe(1);
  expect(r.stderr).toMatch(
    new RegExp(`xp ${command}: cannot write ${file.source}: no space left on device \\(ENOSPC\\)\\n`),
  );
  expect(r.stderr).toMatch(new RegExp(`\\n  free space on the disk that holds .*, or set ${variable} to a folder`));
  expect(r.stderr).not.toMatch(/\n\s+at /);
}

/** A dense head of 6144 x 256 weights: a model of 6.3 MB, and a backup (Adam's two slots) of 19 MB. */
function experiment(name: string, epochs: number): string {
  const file = path.join(work, `${name}.yaml`);
  fs.writeFileSync(
    file,
    `name: ${name}
data: {train: ${shared}/train, validation: ${shared}/validation, image_size: [64, 64], batch_size: 4, max_per_class: 4}
backbone: {name: mobilenet_v2, weights: nsfwjs, cut_layer: block_2_add}
head: {pooling: flatten, units: [256]}
optimizer: {name: adam, learning_rate: 0.001}
training: {epochs: ${epochs}, steps_per_epoch: 2, validation_steps: 1}
`,
  );
  return file;
}

/** The run's row in `xp runs --json` of the test's MLflow, and its tags there. */
async function runOf(name: string) {
  const r = await execa(process.execPath, [bin, 'runs', name, '--json'], {
    reject: false,
    env: { MLFLOW_TRACKING_URI: mlflow().url },
  });
  expect(r.exitCode, r.stderr).toBe(0);
  const rows = JSON.parse(r.stdout) as { status: string; runDir: string; tags: Record<string, string> }[];
  expect(rows).toHaveLength(1);
  return rows[0];
}

/** Every JSON file of a folder parses: none is cut short. */
function expectWholeJson(dir: string) {
  for (const entry of fs.readdirSync(dir, { recursive: true, withFileTypes: true }))
    if (entry.isFile() && entry.name.endsWith('.json'))
      expect(
        () => JSON.parse(fs.readFileSync(path.join(entry.parentPath, entry.name), 'utf8')),
        entry.name,
      ).not.toThrow();
}

describe('a full disk under the run folder (XP_RUNS_DIR)', () => {
  test('while the run writes its model: the run FAILED, its history whole, no model folder', async () => {
    const r = await onSmallDisk(
      '2m',
      'outputs',
      ['run', experiment('disk-outputs', 2), '-q', '--no-backup'],
      (disk) => ({
        XP_RUNS_DIR: disk,
      }),
    );
    expectDiskFull(r, /\S+\/disk-outputs\/[^/\s]+\/model/, 'XP_RUNS_DIR');
    const run = await runOf('disk-outputs');
    expect(run.status).toBe('FAILED');
    expect(run.tags['xp.error']).toMatch(/model: no space left on device/);
    const runDir = r.inLeft(run.runDir);
    expect(fs.existsSync(path.join(runDir, 'model'))).toBe(false);
    expect(fs.readdirSync(runDir).filter((f) => f.startsWith('model'))).toEqual([]);
    expect(JSON.parse(fs.readFileSync(path.join(runDir, 'history.json'), 'utf8'))).toHaveLength(2);
    expectWholeJson(runDir);
  }, 240_000);

  test("while a per-epoch backup is written: the run FAILED at the next epoch's end, its history whole, no part of a backup left", async () => {
    const r = await onSmallDisk('2m', 'backup', ['run', experiment('disk-backup', 3), '-q'], (disk) => ({
      XP_RUNS_DIR: disk,
    }));
    expectDiskFull(r, /\S+\/disk-backup\/[^/\s]+\/backup/, 'XP_RUNS_DIR');
    expect(r.stderr).toMatch(/--no-backup writes no per-epoch backup \(19 MB here\)/);
    const run = await runOf('disk-backup');
    expect(run.status).toBe('FAILED');
    const runDir = r.inLeft(run.runDir);
    expect(fs.readdirSync(runDir).filter((f) => f.startsWith('backup'))).toEqual([]);
    expect(JSON.parse(fs.readFileSync(path.join(runDir, 'history.json'), 'utf8'))).toHaveLength(2);
    expectWholeJson(runDir);
  }, 240_000);
});

describe('a full disk under the data and cache directories (XP_DATA_DIR, XP_CACHE_DIR)', () => {
  let url: string;
  let web: http.Server;
  beforeAll(async () => {
    // 10 images per class and split: an archive of about 0.85 MB, as much again unpacked.
    const zip = new AdmZip();
    for (const split of ['train', 'validation'])
      for (const label of ['cats', 'dogs'])
        for (const name of fs
          .readdirSync(path.join(shared, split, label))
          .sort()
          .slice(0, 10))
          zip.addFile(`pets/${split}/${label}/${name}`, fs.readFileSync(path.join(shared, split, label, name)));
    const bytes = zip.toBuffer();
    web = http.createServer((_request, response) => {
      response.writeHead(200, { 'content-length': bytes.length }).end(bytes);
    });
    await new Promise<void>((resolve) => web.listen(0, '127.0.0.1', resolve));
    url = `http://127.0.0.1:${(web.address() as AddressInfo).port}/pets.zip`;
  });
  afterAll(() => new Promise((resolve) => web.close(resolve)));

  const dataset = (name: string) => {
    const file = path.join(work, `${name}.yaml`);
    fs.writeFileSync(
      file,
      `name: ${name}
data: {url: "${url}", train: pets/train, validation: pets/validation, image_size: [64, 64], batch_size: 4}
backbone: {name: mobilenet_v2, weights: nsfwjs, cut_layer: block_2_add}
head: {pooling: avg, units: [4]}
training: {epochs: 1, steps_per_epoch: 2}
`,
    );
    return file;
  };

  test('an experiment fetched by URL into the cache (XP_CACHE_DIR): the error of the command, not a problem of the file', async () => {
    const big = `name: big-remote\n#${'x'.repeat(300_000)}\n`;
    const files = http.createServer((_request, response) => {
      response.writeHead(200, { 'content-length': Buffer.byteLength(big) }).end(big);
    });
    await new Promise<void>((resolve) => files.listen(0, '127.0.0.1', resolve));
    try {
      const remote = `http://127.0.0.1:${(files.address() as AddressInfo).port}/remote.yaml`;
      const r = await onSmallDisk('100k', 'disk-cache', ['check', remote], (disk) => ({
        XP_CACHE_DIR: path.join(disk, 'cache'),
      }));
      expectDiskFull(r, /\S+\/cache\/remote\/\.[0-9a-f]+\.part/, 'XP_CACHE_DIR', 'check');
      expect(fs.readdirSync(r.left, { recursive: true }).filter((f) => String(f).endsWith('.part'))).toEqual([]);
    } finally {
      await new Promise((resolve) => files.close(resolve));
    }
  }, 60_000);

  for (const [when, size, file] of [
    ['while the archive downloads', '200k', /\S+\/data\/\.download-[^/\s]+\.zip/],
    ['while the archive is unpacked', '1200k', /\S+\/data\/\.extract-[^\s]+\.jpg/],
  ] as const) {
    test(`${when}: nothing of it is left in the data directory, and no run begins`, async () => {
      const name = `disk-data-${size}`;
      const r = await onSmallDisk(size, name, ['run', dataset(name), '-q', '--no-lock'], (disk) => ({
        XP_DATA_DIR: path.join(disk, 'data'),
        XP_CACHE_DIR: path.join(disk, 'cache'),
        XP_RUNS_DIR: path.join(work, name, 'runs'),
      }));
      expectDiskFull(r, file, 'XP_DATA_DIR');
      const left = fs.readdirSync(r.left, { recursive: true });
      expect(left.filter((f) => /\.(zip|jpg)$/.test(String(f)))).toEqual([]);
      expect(fs.existsSync(path.join(work, name, 'runs', name))).toBe(false);
    }, 120_000);
  }
});

describe("a full disk under the MLflow server's artifact store", () => {
  let url: string;
  let mlflowServer: ReturnType<typeof execa>;
  beforeAll(async () => {
    // The server stores artifacts on a 1 MB tmpfs of its own mount namespace; its runs go to a disk with room.
    const store = path.join(work, 'full-artifacts');
    fs.mkdirSync(path.join(store, 'artifacts'), { recursive: true });
    const port = await freePort();
    url = `http://127.0.0.1:${port}`;
    const script = `mount -t tmpfs -o size=1m tmpfs "$0/artifacts" || exit ${NO_MOUNT}; exec "$@"`;
    mlflowServer = execa(
      'unshare',
      [
        ...[
          '-Urm',
          'sh',
          '-c',
          script,
          store,
          mlflowBin(),
          'server',
          '--backend-store-uri',
          `sqlite:///${store}/mlflow.db`,
        ],
        ...['--artifacts-destination', path.join(store, 'artifacts'), '--serve-artifacts', '--workers', '1'],
        ...['--host', '127.0.0.1', '--port', String(port)],
      ],
      { reject: false, detached: true, stdio: 'ignore' },
    );
    mlflowServer.catch(() => {});
    const deadline = Date.now() + SERVER_TIMEOUT;
    while (!(await isHealthy(url))) {
      expect(mlflowServer.exitCode, 'the MLflow server on a tmpfs (unshare -Urm) did not start').toBeNull();
      expect(Date.now()).toBeLessThan(deadline);
      await new Promise((resolve) => setTimeout(resolve, 300));
    }
  }, SERVER_TIMEOUT + 10_000);
  afterAll(() => {
    try {
      process.kill(-mlflowServer.pid!, 'SIGKILL');
    } catch {
      // gone
    }
  });

  test('the upload of the model: said with the file and the likely cause; the run is not FINISHED in MLflow without it, and `xp sync` sends it later', async () => {
    const runs = path.join(work, 'upload', 'runs');
    const r = await execa(process.execPath, [bin, 'run', experiment('disk-upload', 2), '-q', '--no-backup'], {
      reject: false,
      cwd: root,
      env: { XP_RUNS_DIR: runs, MLFLOW_TRACKING_URI: url, XP_TRACKING_END_TIMEOUT: '5' },
    });
    expect(r.stderr).not.toMatch(/\n\s+at /);
    const said = r.stdout + r.stderr;
    expect(said).toMatch(
      /could not store model\/weights\.bin, \d+\.\d MB: is its artifact store full or not writable\? its log says why\)/,
    );
    expect(said).toMatch(/NOT delivered yet: .*artifact file\(s\), the final run status/);
    const [id] = fs.readdirSync(path.join(runs, 'disk-upload'));
    const runDir = path.join(runs, 'disk-upload', id);
    expect(said).toContain(`xp sync ${runDir}`);
    // The run's own files are whole: the model is there to send.
    expect(fs.statSync(path.join(runDir, 'model', 'weights.bin')).size).toBeGreaterThan(6e6);
    const run = await createClient(url).getRun(openJournal(runDir).runRef()!.runId);
    expect(run.info.status).toBe('RUNNING');
    expect(
      openJournal(runDir)
        .pending()
        .map((record) => record.kind),
    ).toContain('end');
  }, 240_000);
});
