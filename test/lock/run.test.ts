// `xp run` end to end with xp.lock: data.url is served by a local HTTP server on 127.0.0.1 (real images from the
// shared data set, zipped). The first run writes xp.lock beside the experiment, a second verifies it, a changed
// archive stops the run before training with both digests and exit 1, --lock-write accepts it; --parallel
// children use the parent's lock file and mode.
import AdmZip from 'adm-zip';
import { execa } from 'execa';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, expect, test } from 'vitest';

const root = path.resolve(import.meta.dirname, '../..');
const bin = path.join(root, 'bin', 'xp.js');
// The shared data set beside the clone (or beside the folder of its git worktrees).
const shared = ['../shared', '../../shared']
  .map((up) => path.resolve(root, up, 'datasets/cats_and_dogs_filtered'))
  .find((dir) => fs.existsSync(dir))!;
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'xp-lock-run-'));
const runs = path.join(tmp, 'runs');

/** A small cats-and-dogs archive: `perClass` training and 6 validation images per class. */
function petsZip(perClass: number): Buffer {
  const zip = new AdmZip();
  for (const [split, n] of [
    ['train', perClass],
    ['validation', 6],
  ] as const) {
    for (const cls of ['cats', 'dogs']) {
      for (let i = 0; i < n; i++) {
        const name = `${cls.slice(0, -1)}.${split === 'train' ? i : 2000 + i}.jpg`;
        zip.addFile(`pets/${split}/${cls}/${name}`, fs.readFileSync(path.join(shared, split, cls, name)));
      }
    }
  }
  return zip.toBuffer();
}

let server: Server;
let url: string;
let archive = petsZip(8);
beforeAll(async () => {
  server = createServer((_req, res) => res.writeHead(200, { 'content-length': archive.length }).end(archive));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/pets.zip`;
});
afterAll(async () => {
  server.closeAllConnections();
  await new Promise((resolve) => server.close(resolve));
  fs.rmSync(tmp, { recursive: true, force: true });
}, 30_000);

const sha = (bytes: Buffer) => createHash('sha256').update(bytes).digest('hex');
const experiment = (dir: string, extra = ''): string => {
  fs.mkdirSync(dir, { recursive: true });
  const file = path.join(dir, 'pets.yaml');
  fs.writeFileSync(
    file,
    `name: pets-lock
data: {url: "${url}", train: pets/train, validation: pets/validation, image_size: [96, 96], batch_size: 4}
backbone: {name: mobilenet_v2, weights: nsfwjs, cut_layer: block_2_add}
head: {pooling: avg, units: [4]}
training: {epochs: 1, steps_per_epoch: 2}
${extra}`,
  );
  return file;
};
// Each run gets its own data directory, as on another machine: the archive is downloaded (and checked) every time.
let machines = 0;
const xp = (args: string[]) =>
  execa(
    process.execPath,
    [bin, 'run', ...args, '--no-track', '--quiet', '--no-backup', '--data-dir', path.join(tmp, `data-${++machines}`)],
    { reject: false, cwd: root, env: { XP_RUNS_DIR: runs } },
  );
const runFolders = () =>
  fs.existsSync(path.join(runs, 'pets-lock')) ? fs.readdirSync(path.join(runs, 'pets-lock')).length : 0;

test('xp run writes xp.lock beside the experiment, verifies it, stops before training on a changed archive, and --lock-write accepts it', async () => {
  const file = experiment(path.join(tmp, 'project'));
  const lockFile = path.join(tmp, 'project', 'xp.lock');
  const first = await xp([file]);
  expect(first.stderr).not.toMatch(/error/i);
  expect(first.exitCode).toBe(0);
  const pinned = fs.readFileSync(lockFile, 'utf8');
  expect(pinned).toBe(`{\n  "remote": {\n    "${url}": "${sha(archive)}"\n  },\n  "version": "1"\n}\n`);

  const second = await xp([file]);
  expect(second.exitCode).toBe(0);
  expect(fs.readFileSync(lockFile, 'utf8')).toBe(pinned);
  expect(runFolders()).toBe(2);

  const before = archive;
  archive = petsZip(9);
  const changed = await xp([file]);
  expect(changed.exitCode).toBe(1);
  expect(changed.stderr).toContain(`xp run: ${url} does not match its entry in the lock file ${lockFile}:`);
  expect(changed.stderr).toContain(`expected sha256 ${sha(before)}`);
  expect(changed.stderr).toContain(`actual sha256   ${sha(archive)}`);
  expect(changed.stderr).toContain('rerun with --lock-write to accept the new content');
  expect(changed.stderr).not.toMatch(/\n\s+at /);
  expect(changed.stdout).not.toContain('Decoding'); // stopped before any image was decoded, let alone trained on
  expect(runFolders()).toBe(2);
  expect(fs.readFileSync(lockFile, 'utf8')).toBe(pinned);

  const accepted = await xp([file, '--lock-write']);
  expect(accepted.exitCode).toBe(0);
  expect(JSON.parse(fs.readFileSync(lockFile, 'utf8')).remote).toEqual({ [url]: sha(archive) });
  expect(accepted.stdout).toContain('Found 18 training');
}, 300_000);

test('--parallel children check the lock the parent was given: --frozen refuses a new URL in each, --lock=<file> is where they pin', async () => {
  const file = experiment(path.join(tmp, 'sweep'), 'sweep: {backbone.cut_layer: [block_1_project_BN, block_2_add]}\n');
  const lockFile = path.join(tmp, 'elsewhere', 'team.lock');
  fs.mkdirSync(path.dirname(lockFile), { recursive: true });
  const frozen = await xp([file, '--parallel', '2', `--lock=${lockFile}`, '--frozen']);
  expect(frozen.exitCode).not.toBe(0);
  // Each worker refuses it before training (a sweep reports failed trials and goes on to its summary).
  for (const worker of [1, 2])
    expect(frozen.stdout).toContain(
      `[worker ${worker}] trial(s) ${worker} FAILED: ${url} (sha256 ${sha(archive)}) is not in the lock file ${lockFile}, and --frozen forbids new entries`,
    );
  expect(frozen.stdout).not.toContain('epoch 1:');
  expect(fs.existsSync(lockFile)).toBe(false);

  const pinned = await xp([file, '--parallel', '2', `--lock=${lockFile}`]);
  expect(pinned.exitCode).toBe(0);
  expect(pinned.stdout).toContain('Running 2 group(s) in 2 processes');
  expect(JSON.parse(fs.readFileSync(lockFile, 'utf8')).remote).toEqual({ [url]: sha(archive) });
  expect(fs.existsSync(path.join(tmp, 'sweep', 'xp.lock'))).toBe(false);
}, 300_000);

const check = (args: string[]) => execa(process.execPath, [bin, 'check', ...args], { reject: false, cwd: root });

test('xp check reports a damaged xp.lock beside the experiment (left as it was), --no-lock skips it, contradicting flags are refused', async () => {
  const file = experiment(path.join(tmp, 'damaged'));
  const lockFile = path.join(tmp, 'damaged', 'xp.lock');
  fs.writeFileSync(lockFile, '{"version": "1", "remote": {"https://a.test/x": ');
  const damaged = await check([file]);
  expect(damaged.exitCode).toBe(1);
  expect(damaged.stderr).toContain(`xp check: The lock file ${lockFile} is damaged: not valid JSON`);
  expect(damaged.stderr).toContain('delete it to pin every URL afresh on the next run');
  expect(damaged.stderr).not.toMatch(/\n\s+at /);
  expect(fs.readFileSync(lockFile, 'utf8')).toBe('{"version": "1", "remote": {"https://a.test/x": ');
  expect((await check([file, '--no-lock'])).exitCode).toBe(0);

  const both = await check([file, '--lock-write', '--frozen']);
  expect(both.exitCode).toBe(1);
  expect(both.stderr).toContain('xp check: --lock-write and --frozen cannot be used together');
}, 60_000);

test('in a sweep run in one process, a refused download fails every trial not yet trained, and trains none', async () => {
  const file = experiment(
    path.join(tmp, 'sequential'),
    'sweep: {backbone.cut_layer: [block_1_project_BN, block_2_add]}\n',
  );
  const r = await xp([file, '--frozen']);
  expect(r.exitCode).toBe(1);
  expect(r.stdout).toContain(
    `trial(s) 1 FAILED: ${url} (sha256 ${sha(archive)}) is not in the lock file ${path.join(tmp, 'sequential', 'xp.lock')}, and --frozen forbids new entries`,
  );
  expect(r.stdout).not.toContain('trial(s) 2 FAILED'); // not attempted
  expect(r.stdout.match(/^Run FAILED: /gm)).toHaveLength(2);
  expect(r.stdout).not.toMatch(/epoch 1/);
  expect(requestsOf(r.stderr)).toBe(1);
}, 120_000);

const requestsOf = (stderr: string) => stderr.split('\n').filter((line) => line.startsWith('Downloading ')).length;
