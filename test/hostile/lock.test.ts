// Hostile and damaged xp.lock files: whatever is wrong in one is an error naming the file and how to fix it, and the
// file is left as it was (the README: a damaged lock is never overwritten). A remote experiment served on 127.0.0.1
// makes each command fetch, so that it would pin.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseLock } from '../../src/lock/file.ts';
import { startFileServer, type FileServer } from '../remote/helpers.ts';

const root = path.resolve(import.meta.dirname, '../..');
const tmp = fs.realpathSync(fs.mkdtempSync(path.join(os.tmpdir(), 'xp-hostile-lock-')));
let web: FileServer;
beforeAll(async () => {
  web = await startFileServer();
});
afterAll(async () => {
  await web.close();
  fs.rmSync(tmp, { recursive: true, force: true });
});

const EXPERIMENT = `name: lock
data: {url: https://example.com/d.zip, train: d/train, validation: d/validation}
backbone: {name: mobilenet_v2, cut_layer: block_2_add}
`;

describe('a damaged xp.lock is reported, never overwritten', () => {
  for (const [what, remote] of [
    ['null', 'null'],
    ['a list', '[]'],
    ['a string', '"https://example.com/d.zip"'],
  ] as const) {
    it(`"remote": ${what}`, async () => {
      const project = fs.mkdtempSync(path.join(tmp, 'project-'));
      const lockFile = path.join(project, 'xp.lock');
      const text = `{"version": "1", "remote": ${remote}}\n`;
      fs.writeFileSync(lockFile, text);
      expect(() => parseLock(text, lockFile)).toThrow(`The lock file ${lockFile} is damaged: "remote" is ${remote}`);
      const url = web.put(`/lock/${what.replace(' ', '-')}.yaml`, EXPERIMENT);
      const r = await execa(process.execPath, [path.join(root, 'bin', 'xp.js'), 'config', url], {
        reject: false,
        cwd: project,
        env: { XP_CACHE_DIR: path.join(tmp, 'cache') },
      });
      expect(r.exitCode, r.stderr).toBe(1);
      expect(r.stderr).toContain(`xp config: The lock file ${lockFile} is damaged: "remote" is ${remote}`);
      expect(fs.readFileSync(lockFile, 'utf8')).toBe(text);
    });
  }

  it('a lock without "remote" has nothing pinned yet: the first fetch adds it', () => {
    expect(parseLock('{"version": "1"}', 'xp.lock').remote).toEqual({});
  });
});
