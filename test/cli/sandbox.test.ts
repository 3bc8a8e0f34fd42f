// Files from the web run in Deno's sandbox, through `xp check` / `xp run` as a user calls them: a remote experiment
// (or a local one extending a remote base) that names a local folder, a weights file in the home folder or another
// tracking server is refused before any of it is read or contacted, with the flag to add; the flag, or -A, lets it
// through; a local file is trusted. A local HTTP server on 127.0.0.1 stands in for the web.
import fs from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { startFileServer, type FileServer } from '../remote/helpers.ts';

const root = path.resolve(import.meta.dirname, '../..');
const bin = path.join(root, 'bin', 'xp.js');
const shared = [
  path.resolve(root, '../shared/datasets/cats_and_dogs_filtered'),
  path.resolve(root, '../../shared/datasets/cats_and_dogs_filtered'),
].find((d) => fs.existsSync(d))!;
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'xp-sandbox-'));
let web: FileServer;
// A tracking server that counts what reaches it: nothing may, until --allow-net grants its host.
let tracking: Server;
let trackingHits = 0;
let trackingHost: string;

beforeAll(async () => {
  web = await startFileServer();
  tracking = createServer((_req, res) => {
    trackingHits++;
    res.writeHead(503).end();
  });
  await new Promise<void>((resolve) => tracking.listen(0, '127.0.0.1', resolve));
  trackingHost = `127.0.0.1:${(tracking.address() as AddressInfo).port}`;
});
afterAll(async () => {
  await web.close();
  tracking.closeAllConnections();
  await new Promise((resolve) => tracking.close(resolve));
  fs.rmSync(tmp, { recursive: true, force: true });
});

const xp = (args: string[]) =>
  execa(process.execPath, [bin, ...args], {
    reject: false,
    cwd: tmp,
    env: { XP_CACHE_DIR: path.join(tmp, 'cache'), XP_RUNS_DIR: path.join(tmp, 'runs') },
  });

const folder = (split: string) => pathToFileURL(path.join(shared, split)).href;
const experiment = (extra: { data?: string; weights?: string; tracking?: string } = {}) => `name: sandboxed
data: {${extra.data ?? `train: ${folder('train')}, validation: ${folder('validation')}`}, image_size: [96, 96], batch_size: 4, max_per_class: 4}
backbone: {name: mobilenet_v2, weights: ${extra.weights ?? 'nsfwjs'}, cut_layer: block_2_add}
head: {pooling: avg, units: [4]}
training: {epochs: 1, steps_per_epoch: 1}
${extra.tracking ? `tracking: {uri: "${extra.tracking}"}\n` : ''}`;

describe('a file from the web', () => {
  test('reading a local folder is refused before it is read (exit 2, the flag named), and --allow-read lets it through', async () => {
    // A folder that does not exist: were it read before the check, the error would say so instead.
    const missing = path.join(tmp, 'photos');
    const url = web.put(
      '/folders.yaml',
      experiment({
        data: `train: ${pathToFileURL(path.join(missing, 'train')).href}, validation: ${folder('validation')}`,
      }),
    );
    const refused = await xp(['check', url, '--no-lock']);
    expect(refused.exitCode).toBe(2);
    expect(refused.stderr).toContain(
      `${url} needs permissions it was not granted: read ${path.join(missing, 'train')} (data.train); read ${path.join(shared, 'validation')} (data.validation)`,
    );
    expect(refused.stderr).toContain(
      `--allow-read=${path.join(missing, 'train')} --allow-read=${path.join(shared, 'validation')}`,
    );
    expect(refused.stderr).not.toMatch(/does not exist|at .*\.ts:\d+/);

    const shown = web.put('/shared.yaml', experiment());
    expect((await xp(['check', shown, '--no-lock'])).exitCode).toBe(2);
    const granted = await xp(['check', shown, '--no-lock', `--allow-read=${shared}`]);
    expect(granted.exitCode, granted.stderr).toBe(0);
    expect((await xp(['check', shown, '--no-lock', '--allow-read'])).exitCode).toBe(0);
    expect((await xp(['check', shown, '--no-lock', '-A'])).exitCode).toBe(0);
  });

  test('--dry-run lists every access with its verdict, asks nothing and touches nothing; granted, it lists them and exits 0', async () => {
    const url = web.put('/dry-run.yaml', experiment());
    const listed = await xp(['run', url, '--dry-run', '--no-lock']);
    expect(listed.exitCode).toBe(2);
    expect(listed.stderr).toContain('what it would read, write and contact (nothing was):');
    // The refused accesses and the allowed ones, each with its verdict.
    expect(listed.stderr).toMatch(
      new RegExp(`read +${path.join(shared, 'train')} +\\(data\\.train; needs --allow-read=`),
    );
    expect(listed.stderr).toMatch(/write +\S+ +\(.*allowed: /);
    expect(listed.stderr).not.toMatch(/Allow\? \[y\/N\/A\]|at .*\.ts:\d+/);
    expect(fs.existsSync(path.join(tmp, 'runs', 'sandboxed'))).toBe(false);

    const granted = await xp(['run', url, '--dry-run', '--no-lock', `--allow-read=${shared}`]);
    expect(granted.exitCode, granted.stderr).toBe(0);
    expect(granted.stdout).toMatch(
      new RegExp(`read +${path.join(shared, 'train')} +\\(data\\.train; allowed: --allow-read\\)`),
    );
  });

  test('a weights file in the home folder is refused before it is opened; --allow-read for that file lets it be opened', async () => {
    const weights = path.join(os.homedir(), `xp-sandbox-${process.pid}-missing.h5`);
    const url = web.put('/weights.yaml', experiment({ weights: pathToFileURL(weights).href }));
    const refused = await xp(['check', url, '--no-lock', `--allow-read=${shared}`]);
    expect(refused.exitCode).toBe(2);
    expect(refused.stderr).toContain(`read ${weights} (backbone.weights)`);
    expect(refused.stderr).toContain(`--allow-read=${weights}`);
    // Granted, the file is looked at (and found missing): the check came first, then the read.
    const opened = await xp(['check', url, '--no-lock', `--allow-read=${shared},${weights}`]);
    expect(opened.stderr).toContain('backbone.weights');
    expect(opened.stderr).not.toContain('not granted');
  });

  test("another tracking server is the user's choice: refused with nothing sent; --allow-net=host:port lets the run plan it", async () => {
    const url = web.put('/tracking.yaml', experiment({ tracking: `http://${trackingHost}` }));
    const refused = await xp(['run', url, '--no-lock', `--allow-read=${shared}`]);
    expect(refused.exitCode).toBe(2);
    expect(refused.stderr).toContain(`contact ${trackingHost} (tracking.uri)`);
    expect(refused.stderr).toContain(`--allow-net=${trackingHost}`);
    expect(trackingHits).toBe(0);
    expect(fs.existsSync(path.join(tmp, 'runs', 'sandboxed'))).toBe(false);

    const planned = await xp([
      'run',
      url,
      '--no-lock',
      `--allow-read=${shared}`,
      `--allow-net=${trackingHost}`,
      '--dry-run',
    ]);
    expect(planned.exitCode, planned.stderr).toBe(0);
    expect(planned.stdout).toContain(`(${url} runs in the sandbox)`);
    expect(planned.stdout).toMatch(
      new RegExp(`net +${trackingHost.replace(/\./g, '\\.')} +\\(tracking\\.uri; allowed: --allow-net\\)`),
    );
    expect(planned.stdout).toMatch(/read +.*validation +\(data\.validation; allowed: --allow-read\)/);
    // --allow-net=127.0.0.1 (any port) covers it too.
    expect(
      (await xp(['run', url, '--no-lock', `--allow-read=${shared}`, '--allow-net=127.0.0.1', '--dry-run'])).exitCode,
    ).toBe(0);
  });

  test('a local file extending a remote base is sandboxed too, named with the base it extends', async () => {
    const baseUrl = web.put('/base.yaml', experiment());
    const local = path.join(tmp, 'extends-remote.yaml');
    fs.writeFileSync(local, `extends: ${baseUrl}\nname: local-extends\n`);
    const refused = await xp(['check', local, '--no-lock']);
    expect(refused.exitCode).toBe(2);
    expect(refused.stderr).toContain(`${local} (extending ${baseUrl}) needs permissions it was not granted`);
    expect((await xp(['check', local, '--no-lock', `--allow-read=${shared}`])).exitCode).toBe(0);
  });
});

test("a local file is the user's own: it reads any folder without a flag, and --dry-run says so", async () => {
  const local = path.join(tmp, 'local.yaml');
  fs.writeFileSync(
    local,
    experiment({ data: `train: ${path.join(shared, 'train')}, validation: ${path.join(shared, 'validation')}` }),
  );
  const r = await xp(['run', local, '--dry-run']);
  expect(r.exitCode, r.stderr).toBe(0);
  expect(r.stdout).toContain('(a local file: every permission)');
  expect(r.stdout).toMatch(/read +.*train +\(data\.train; allowed: a local file\)/);
});
