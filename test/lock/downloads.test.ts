// The downloads xp makes today, pinned in xp.lock: dataset archives by data.url (downloaded, or unpacked earlier and
// reused from the data directory) and the official Keras weights (downloaded, or found on disk; Keras' md5 still
// checked). A local HTTP server on 127.0.0.1 stands in for the web.
import AdmZip from 'adm-zip';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { PassThrough } from 'node:stream';
import { pathToFileURL } from 'node:url';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type { DataConfig } from '../../src/config/types.ts';
import { resolveDataset } from '../../src/data/dataset.ts';
import { LockError, ModelError } from '../../src/errors.ts';
import { useLock, type LockMode } from '../../src/lock/lock.ts';
import { kerasWeightsPath, type KerasWeightsFile } from '../../src/model/keras-weights.ts';

const served = new Map<string, Buffer>();
const requests: string[] = [];
let server: Server;
let baseUrl: string;
beforeAll(async () => {
  server = createServer((req, res) => {
    requests.push(req.url ?? '');
    const body = served.get(req.url ?? '');
    if (body) res.writeHead(200, { 'content-length': body.length }).end(body);
    else res.writeHead(404).end();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  baseUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
afterAll(async () => {
  server.closeAllConnections();
  await new Promise((resolve) => server.close(resolve));
});

let tmp: string;
let lockFile: string;
beforeEach(async () => {
  tmp = await mkdtemp(path.join(os.tmpdir(), 'xp-lock-downloads-'));
  lockFile = path.join(tmp, 'xp.lock');
  requests.length = 0;
});
afterEach(async () => {
  await useLock('unused.yaml', { mode: 'off' });
  await rm(tmp, { recursive: true, force: true });
});

const sha = (bytes: Buffer) => createHash('sha256').update(bytes).digest('hex');
const lockWith = (mode: LockMode) => useLock(path.join(tmp, 'exp.yaml'), { mode });
const entries = async () => JSON.parse(await readFile(lockFile, 'utf8')).remote as Record<string, string>;
const failure = (p: Promise<unknown>) =>
  p.then(
    () => undefined,
    (error: unknown) => error as LockError,
  );

describe('dataset archives (data.url)', () => {
  // Built once per version: a zip records its entries' times, so a rebuild a second later has other bytes.
  const built = new Map<string, Buffer>();
  const pets = (version: string): Buffer => {
    if (built.has(version)) return built.get(version)!;
    const zip = new AdmZip();
    for (const split of ['train', 'validation'])
      for (const cls of ['cats', 'dogs'])
        zip.addFile(`pets/${split}/${cls}/1.jpg`, Buffer.from(`${version} ${split} ${cls}`));
    built.set(version, zip.toBuffer());
    return built.get(version)!;
  };
  const config = (url: string): DataConfig => ({
    url,
    train: 'pets/train',
    validation: 'pets/validation',
    image_size: [32, 32],
    batch_size: 2,
    class_mode: 'binary',
    interpolation: 'nearest',
  });
  const resolve = (url: string) =>
    resolveDataset(config(url), {
      dataDir: path.join(tmp, 'data'),
      baseDir: '/unused',
      progress: new PassThrough().resume(),
    });
  const trainFile = () => readFile(path.join(tmp, 'data', 'pets/train/cats/1.jpg'), 'utf8');

  it('a download is pinned; the same bytes verify; changed bytes stop before unpacking; --lock-write accepts them', async () => {
    const v1 = pets('v1');
    served.set('/pets.zip', v1);
    const url = `${baseUrl}/pets.zip`;
    await lockWith('default');
    await resolve(url);
    expect(await entries()).toEqual({ [url]: sha(v1) });

    // Another data directory downloads it again: the same bytes pass.
    await resolveDataset(config(url), {
      dataDir: path.join(tmp, 'data2'),
      baseDir: '/unused',
      progress: new PassThrough().resume(),
    });

    // The server now serves other bytes, and the cached folder is from another url: fetched, refused.
    const v2 = pets('v2');
    served.set('/pets.zip', v2);
    await rm(path.join(tmp, 'data', '.xp-sources'), { recursive: true });
    await rm(path.join(tmp, 'data', 'pets'), { recursive: true });
    const error = await failure(resolve(url));
    expect(error).toBeInstanceOf(LockError);
    expect(error!.message).toContain(`expected sha256 ${sha(v1)}`);
    expect(error!.message).toContain(`actual sha256   ${sha(v2)}`);
    expect(existsSync(path.join(tmp, 'data', 'pets'))).toBe(false); // not unpacked
    expect(
      (await readdir(path.join(tmp, 'data'))).filter((n) => n.startsWith('.download-') || n.startsWith('.extract-')),
    ).toEqual([]);

    await lockWith('write');
    await resolve(url);
    expect(await trainFile()).toBe('v2 train cats');
    expect(await entries()).toEqual({ [url]: sha(v2) });
  });

  it('a data set unpacked earlier is checked by the sha256 its cache recorded: refused when the lock pins other bytes', async () => {
    const url = `${baseUrl}/cached.zip`;
    served.set('/cached.zip', pets('v1'));
    await lockWith('off');
    await resolve(url); // unpacked without a lock
    requests.length = 0;

    await lockWith('default');
    await resolve(url); // reused, and pinned by its recorded sha256
    expect(requests).toEqual([]);
    expect(await entries()).toEqual({ [url]: sha(pets('v1')) });

    await writeFile(lockFile, JSON.stringify({ version: '1', remote: { [url]: sha(pets('other')) } }));
    const error = await failure(resolve(url));
    expect(error).toBeInstanceOf(LockError);
    expect(error!.message).toContain(`expected sha256 ${sha(pets('other'))}`);
    expect(error!.message).toContain(`actual sha256   ${sha(pets('v1'))}`);
    expect(error!.hint).toContain(
      `${path.join(tmp, 'data', 'pets')} holds that content, unpacked earlier: remove it to download and verify the archive again.`,
    );
    expect(requests).toEqual([]);

    await lockWith('frozen');
    await writeFile(lockFile, JSON.stringify({ version: '1', remote: {} }));
    expect((await failure(resolve(url)))!.message).toContain('--frozen forbids new entries');
  });

  it('a file:// data.url is not remote: nothing is pinned', async () => {
    const zip = path.join(tmp, 'pets.zip');
    await writeFile(zip, pets('local'));
    await lockWith('default');
    await resolve(pathToFileURL(zip).href);
    expect(await trainFile()).toBe('local train cats');
    expect(existsSync(lockFile)).toBe(false);
  });
});

describe('Keras weights', () => {
  // Any bytes do: with an md5 given, the file is checked by it alone (no HDF5 is read).
  const weights = randomBytes(4096);
  const md5 = createHash('md5').update(weights).digest('hex');
  const spec: KerasWeightsFile = { file: 'w_notop.h5', urlPath: 'models/w_notop.h5' };
  const fetchWeights = (extra: { md5?: string } = {}) =>
    kerasWeightsPath(spec, {
      cacheDir: path.join(tmp, 'cache'),
      kerasDir: path.join(tmp, 'keras'),
      weightsBaseUrl: `${baseUrl}/`,
      md5,
      ...extra,
    });

  it('a download is pinned by sha256 besides the md5 check; other bytes are refused and not kept', async () => {
    served.set('/models/w_notop.h5', weights);
    const url = `${baseUrl}/models/w_notop.h5`;
    await lockWith('default');
    const file = await fetchWeights();
    expect(await entries()).toEqual({ [url]: sha(weights) });

    await rm(file);
    await writeFile(lockFile, JSON.stringify({ version: '1', remote: { [url]: 'f'.repeat(64) } }));
    const error = await failure(fetchWeights());
    expect(error).toBeInstanceOf(LockError);
    expect(error!.message).toContain(`actual sha256   ${sha(weights)}`);
    expect(await readdir(path.join(tmp, 'cache'))).toEqual([]); // neither the file nor a temp file kept

    // Keras' md5 stays checked: --lock-write does not accept a file with the wrong md5.
    await lockWith('write');
    await expect(fetchWeights({ md5: '0'.repeat(32) })).rejects.toThrow(ModelError);
    expect(await fetchWeights()).toBe(file);
    expect(await entries()).toEqual({ [url]: sha(weights) });
  });

  it('a copy found in ~/.keras/models is pinned under the URL it comes from, and refused when the lock pins other bytes', async () => {
    await mkdir(path.join(tmp, 'keras'), { recursive: true });
    const copy = path.join(tmp, 'keras', spec.file);
    await writeFile(copy, weights);
    const url = `${baseUrl}/models/w_notop.h5`;
    await lockWith('default');
    expect(await fetchWeights()).toBe(copy);
    expect(requests).toEqual([]);
    expect(await entries()).toEqual({ [url]: sha(weights) });

    await writeFile(lockFile, JSON.stringify({ version: '1', remote: { [url]: 'e'.repeat(64) } }));
    const error = await failure(fetchWeights());
    expect(error).toBeInstanceOf(LockError);
    expect(error!.hint).toContain(`${copy} holds that content: remove it to download and verify the file again.`);
  });
});
