// Hostile flag values: an empty grant (`--allow-read=`, `--allow-net=,`, `--allow-write=a,,b`) is an error naming
// the flag, as in Deno, never "everything" nor "nothing"; so is any other flag given an empty value (`--queue=` would
// train here instead of queueing). Through `xp check` / `xp run` as a user calls them, on a file from the web (a
// local HTTP server on 127.0.0.1) that reads a local folder and logs to another tracking server.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it, test } from 'vitest';
import { XpError } from '../../src/errors.ts';
import { parseGrants } from '../../src/permissions/grants.ts';
import { startFileServer, type FileServer } from '../remote/helpers.ts';

const root = path.resolve(import.meta.dirname, '../..');
const bin = path.join(root, 'bin', 'xp.js');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'xp-hostile-permissions-'));
let web: FileServer;
let url: string;

beforeAll(async () => {
  web = await startFileServer();
  // A folder that does not exist: were it read, the check would say so instead of refusing it.
  const photos = pathToFileURL(path.join(tmp, 'photos')).href;
  url = web.put(
    '/exp.yaml',
    `name: grabby
data: {train: ${photos}/train, validation: ${photos}/validation, image_size: [96, 96]}
backbone: {name: mobilenet_v2, weights: nsfwjs, cut_layer: block_2_add}
tracking: {uri: "http://mlflow.example:5000"}
`,
  );
});
afterAll(async () => {
  await web.close();
  fs.rmSync(tmp, { recursive: true, force: true });
});

const xp = (args: string[]) =>
  execa(process.execPath, [bin, ...args], {
    reject: false,
    cwd: tmp,
    env: { XP_CACHE_DIR: path.join(tmp, 'cache'), XP_RUNS_DIR: path.join(tmp, 'runs') },
  });

describe('an empty grant is an error naming the flag (exit 2), for every --allow-*', () => {
  for (const flag of [
    '--allow-read=',
    '--allow-net=',
    '--allow-write=',
    '--allow-read=,',
    '--allow-net=,',
    `--allow-read=${tmp},,/srv`,
    '--allow-net=mlflow.example:5000,',
    '--allow-write= ',
  ]) {
    test(flag, async () => {
      const r = await xp(['check', url, flag]);
      expect(r.exitCode, r.stdout + r.stderr).toBe(2);
      const lines = r.stderr.trim().split('\n');
      expect(lines).toHaveLength(1);
      expect(lines[0]).toContain(`${flag.split('=')[0]}=`);
      expect(lines[0]).toMatch(/empty/);
      expect(lines[0]).toContain(`give ${flag.split('=')[0]} alone`);
      expect(r.stdout).toBe('');
    });
  }

  test('--allow-read alone still grants every path; a named path grants that one', async () => {
    // Granted: the check goes on to the folder, which does not exist (exit 2 for that, not for the sandbox).
    const alone = await xp(['check', url, '--allow-read', '--allow-net']);
    expect(alone.stderr).toMatch(/photos/);
    expect(alone.stderr).not.toMatch(/--allow-read|empty/);
    const named = await xp(['check', url, `--allow-read=${tmp}`, '--allow-net=mlflow.example']);
    expect(named.stderr).not.toMatch(/--allow-read|empty/);
    expect(named.stderr).toEqual(alone.stderr);
  });
});

describe('any other flag given an empty value is an error naming it (exit 2), never its default', () => {
  for (const args of [
    ['run', 'local.yaml', '--dry-run', '--queue='],
    ['run', 'local.yaml', '--dry-run', '--lock='],
    ['run', 'local.yaml', '--dry-run', '--data-dir='],
    ['check', 'local.yaml', '--set='],
    ['sync', '--to='],
  ]) {
    const flag = args[args.length - 1].slice(0, -1);
    test(`xp ${args.join(' ')}`, async () => {
      fs.writeFileSync(
        path.join(tmp, 'local.yaml'),
        'name: local\ndata: {url: https://example.com/d.zip, train: d/train, validation: d/validation}\nbackbone: {name: mobilenet_v2, weights: nsfwjs, cut_layer: block_2_add}\ntracking: {enabled: false}\n',
      );
      const r = await xp(args);
      expect(r.exitCode, r.stdout + r.stderr).toBe(2);
      expect(r.stderr.trim().split('\n')).toEqual([
        expect.stringMatching(
          new RegExp(`^xp \\w+: ${flag} is given an empty value: give ${flag} \\S+, or leave the flag out$`),
        ),
      ]);
    });
  }
});

describe('parseGrants', () => {
  it('reads an empty entry as an error, as Deno does ("Empty path is not allowed"), and a flag alone as everything', () => {
    for (const values of [{ read: [''] }, { net: [','] }, { write: ['a,,b'] }, { net: ['a', ' '] }]) {
      const thrown = (() => {
        try {
          parseGrants(values, false, '/home/u');
        } catch (error) {
          return error;
        }
      })();
      expect(thrown).toBeInstanceOf(XpError);
      expect((thrown as XpError).exitCode).toBe(2);
    }
    expect(parseGrants({ read: [null], net: ['a.b', null] }, false, '/home/u')).toEqual({
      read: 'all',
      write: [],
      net: 'all',
    });
  });
});
