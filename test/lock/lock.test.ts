// xp.lock: first use writes the entry, later uses verify it, a mismatch names both digests and --lock-write,
// --lock-write accepts, --frozen refuses new URLs, --no-lock checks nothing, a damaged file is an error naming it,
// the output is sorted and diffable; several processes pinning into one lock at once leave every entry.
import { execa } from 'execa';
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { LockError } from '../../src/errors.ts';
import { formatLock, parseLock } from '../../src/lock/file.ts';
import { lockPin, pinnedBy, useLock } from '../../src/lock/lock.ts';
import { withFileLock } from '../../src/lock/mutex.ts';
import { pin } from '../../src/lock/pin.ts';
import { lockFileFor } from '../../src/paths.ts';

const root = path.resolve(import.meta.dirname, '../..');
const sha = (text: string) => createHash('sha256').update(text).digest('hex');
let tmp: string;
let file: string;
beforeEach(async () => {
  tmp = await mkdtemp(path.join(os.tmpdir(), 'xp-lock-'));
  file = path.join(tmp, 'xp.lock');
});
afterEach(async () => {
  await useLock('unused.yaml', { mode: 'off' });
  await rm(tmp, { recursive: true, force: true });
});

const entries = async () => JSON.parse(await readFile(file, 'utf8')).remote as Record<string, string>;
const failure = (p: Promise<unknown>) =>
  p.then(
    () => undefined,
    (error: unknown) => error as LockError,
  );

describe('xp.lock', () => {
  it('the first use writes the entry, a later use with the same bytes verifies it without rewriting the file', async () => {
    await lockPin(file, 'default')('https://example.test/pets.zip', sha('v1'));
    expect(await readFile(file, 'utf8')).toBe(
      `{\n  "remote": {\n    "https://example.test/pets.zip": "${sha('v1')}"\n  },\n  "version": "1"\n}\n`,
    );
    const written = (await import('node:fs')).statSync(file).mtimeMs;
    await new Promise((resolve) => setTimeout(resolve, 20));
    await lockPin(file, 'default')('https://example.test/pets.zip', sha('v1').toUpperCase());
    expect((await import('node:fs')).statSync(file).mtimeMs).toBe(written);
  });

  it('a mismatch is a LockError with the URL, the lock file, both digests and the --lock-write hint; the lock is unchanged', async () => {
    await lockPin(file, 'default')('https://example.test/pets.zip', sha('v1'));
    const before = await readFile(file, 'utf8');
    const error = await failure(lockPin(file, 'default')('https://example.test/pets.zip', sha('v2')));
    expect(error).toBeInstanceOf(LockError);
    expect(error!.message).toBe(
      `https://example.test/pets.zip does not match its entry in the lock file ${file}:\n  expected sha256 ${sha('v1')}\n  actual sha256   ${sha('v2')}`,
    );
    expect(error!.hint).toContain('rerun with --lock-write to accept the new content');
    expect(await readFile(file, 'utf8')).toBe(before);
  });

  it('--lock-write accepts the new content and keeps the other entries', async () => {
    const pinDefault = lockPin(file, 'default');
    await pinDefault('https://example.test/a.zip', sha('a'));
    await pinDefault('https://example.test/b.zip', sha('b1'));
    await lockPin(file, 'write')('https://example.test/b.zip', sha('b2'));
    expect(await entries()).toEqual({
      'https://example.test/a.zip': sha('a'),
      'https://example.test/b.zip': sha('b2'),
    });
    await lockPin(file, 'default')('https://example.test/b.zip', sha('b2'));
  });

  it('--frozen verifies pinned URLs and refuses a new one, naming it and --frozen, without touching the file', async () => {
    await lockPin(file, 'default')('https://example.test/a.zip', sha('a'));
    const before = await readFile(file, 'utf8');
    const frozen = lockPin(file, 'frozen');
    await frozen('https://example.test/a.zip', sha('a'));
    const error = await failure(frozen('https://example.test/new.zip', sha('n')));
    expect(error).toBeInstanceOf(LockError);
    expect(error!.message).toContain('https://example.test/new.zip');
    expect(error!.message).toContain('--frozen forbids new entries');
    expect((await failure(frozen('https://example.test/a.zip', sha('changed'))))!.message).toContain(
      `expected sha256 ${sha('a')}`,
    );
    expect(await readFile(file, 'utf8')).toBe(before);
    // Without a lock file at all, --frozen creates none.
    const elsewhere = path.join(tmp, 'none', 'xp.lock');
    expect(await failure(lockPin(elsewhere, 'frozen')('https://example.test/a.zip', sha('a')))).toBeInstanceOf(
      LockError,
    );
    expect(existsSync(elsewhere)).toBe(false);
  });

  it('--no-lock checks and writes nothing; file:// URLs are not remote and never pinned', async () => {
    await lockPin(file, 'off')('https://example.test/a.zip', sha('a'));
    await lockPin(file, 'default')('file:///data/pets.zip', sha('a'));
    expect(existsSync(file)).toBe(false);
  });

  it('entries are sorted by URL whatever the order they were pinned in, one line each', async () => {
    const urls = ['https://z.test/1', 'http://127.0.0.1:8/x', 'https://a.test/b', 'https://a.test/a'];
    const p = lockPin(file, 'default');
    for (const url of urls) await p(url, sha(url));
    const text = await readFile(file, 'utf8');
    expect(Object.keys(await entries())).toEqual([...urls].sort());
    expect(text.split('\n').filter((line) => line.includes('://'))).toHaveLength(4);
    expect(formatLock(parseLock(text, file))).toBe(text);
  });

  it('a damaged lock file is an error naming the file and how to fix it, and is left as it was', async () => {
    for (const damaged of [
      '{"version": "1", "remote": {',
      '[]',
      '{"version": "1", "remote": {"https://a.test/x": "md5:abc"}}',
      '{"remote": {}}',
    ]) {
      await writeFile(file, damaged);
      for (const mode of ['default', 'write', 'frozen'] as const) {
        const error = await failure(lockPin(file, mode)('https://a.test/x', sha('x')));
        expect(error).toBeInstanceOf(LockError);
        expect(error!.message).toContain(`The lock file ${file} is damaged`);
        expect(error!.hint).toMatch(/Fix it by hand.*delete it/);
      }
      expect(await readFile(file, 'utf8')).toBe(damaged);
    }
    await writeFile(file, '{"version": "2", "remote": {}}');
    expect((await failure(lockPin(file, 'default')('https://a.test/x', sha('x'))))!.message).toContain(
      'written by a newer xp',
    );
  });

  it('other sections of the file are kept when an entry is added', async () => {
    await writeFile(file, '{"version": "1", "remote": {}, "extends": {"b": 1, "a": 2}}');
    await lockPin(file, 'default')('https://a.test/x', sha('x'));
    expect(JSON.parse(await readFile(file, 'utf8'))).toEqual({
      version: '1',
      remote: { 'https://a.test/x': sha('x') },
      extends: { a: 2, b: 1 },
    });
  });

  it('lives beside a local experiment file and in the current folder for one given by URL; useLock installs it behind pin', async () => {
    expect(lockFileFor(path.join(tmp, 'exp', 'a.yaml'))).toBe(path.join(tmp, 'exp', 'xp.lock'));
    expect(lockFileFor('https://example.test/exp.yaml')).toBe(path.join(process.cwd(), 'xp.lock'));
    expect(await useLock(path.join(tmp, 'a.yaml'), { mode: 'default' })).toBe(file);
    await pin('https://example.test/a.zip', sha('a'));
    expect(await entries()).toEqual({ 'https://example.test/a.zip': sha('a') });
    expect(await useLock(path.join(tmp, 'a.yaml'), { mode: 'off' })).toBeUndefined();
    await pin('https://example.test/b.zip', sha('b'));
    expect(Object.keys(await entries())).toEqual(['https://example.test/a.zip']);
  });
});

describe('writing one lock from several processes', () => {
  it('six processes pinning 40 URLs each at once (some the same) leave a valid lock holding all entries', async () => {
    const script = path.join(tmp, 'pin-many.mts');
    await writeFile(
      script,
      `import { lockPin } from ${JSON.stringify(path.join(root, 'src/lock/lock.ts'))};
import { createHash } from 'node:crypto';
const [file, worker] = process.argv.slice(2);
const pin = lockPin(file, 'default');
const sha = (t: string) => createHash('sha256').update(t).digest('hex');
// Each process's own URLs, plus URLs every process pins with the same bytes.
const urls = [...Array.from({ length: 30 }, (_, i) => 'https://w' + worker + '.test/' + i), ...Array.from({ length: 10 }, (_, i) => 'https://shared.test/' + i)];
await Promise.all(urls.map((url) => pin(url, sha(url))));
`,
    );
    const workers = Array.from({ length: 6 }, (_, w) =>
      execa(process.execPath, ['--import', 'tsx', script, file, String(w)], { cwd: root, reject: false }),
    );
    const results = await Promise.all(workers);
    for (const r of results) expect(r.stderr).toBe('');
    expect(results.map((r) => r.exitCode)).toEqual([0, 0, 0, 0, 0, 0]);
    const lock = parseLock(await readFile(file, 'utf8'), file);
    const expected = [
      ...Array.from({ length: 6 }, (_, w) => Array.from({ length: 30 }, (_, i) => `https://w${w}.test/${i}`)).flat(),
      ...Array.from({ length: 10 }, (_, i) => `https://shared.test/${i}`),
    ];
    expect(Object.keys(lock.remote).sort()).toEqual(expected.sort());
    for (const url of expected) expect(lock.remote[url]).toBe(sha(url));
    expect((await readdir(tmp)).sort()).toEqual(['pin-many.mts', 'xp.lock']); // no temp or .lck files left
  }, 60_000);

  it("a lock left by a dead process is taken over; a live holder's lock is waited for", async () => {
    const dead = await execa(process.execPath, ['-e', 'console.log(process.pid)']);
    await writeFile(`${file}.lck`, JSON.stringify({ pid: Number(dead.stdout), host: os.hostname(), nonce: 'gone' }));
    await lockPin(file, 'default')('https://a.test/x', sha('x'));
    expect(await entries()).toEqual({ 'https://a.test/x': sha('x') });
    expect(existsSync(`${file}.lck`)).toBe(false);

    await writeFile(`${file}.lck`, JSON.stringify({ pid: process.pid, host: os.hostname(), nonce: 'alive' }));
    const error = await failure(withFileLock(file, async () => 'got it', { timeoutMs: 300 }));
    expect(error).toBeInstanceOf(LockError);
    expect(error!.message).toContain(`pid ${process.pid}`);
    expect(error!.hint).toBe(`If no xp process is running, remove ${file}.lck.`);
    expect(await withFileLock(file, async () => 'got it', { staleMs: 0 })).toBe('got it'); // older than staleMs: stale
  });

  it("a queued job's copy of the submitter's entries: known URLs must match, others pass", async () => {
    const check = pinnedBy({ 'https://a.test/x': sha('x') }, 'xp.lock of laptop (the submitter)');
    await check('https://a.test/x', sha('x'));
    await check('https://a.test/new', sha('new'));
    const error = await failure(check('https://a.test/x', sha('changed')));
    expect(error).toBeInstanceOf(LockError);
    expect(error!.message).toContain(`expected sha256 ${sha('x')}`);
    expect(error!.message).toContain('xp.lock of laptop (the submitter)');
  });
});
