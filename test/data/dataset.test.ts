import { createHash } from 'node:crypto';
import { mkdtemp, readdir, rm, stat } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { PassThrough } from 'node:stream';
import AdmZip from 'adm-zip';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type { DataConfig } from '../../src/config/types.ts';
import { resolveDataset } from '../../src/data/dataset.ts';
import { DataError } from '../../src/errors.ts';

const buildZip = (): Buffer => {
  const zip = new AdmZip();
  for (const split of ['train', 'validation']) {
    for (const cls of ['cats', 'dogs']) zip.addFile(`pets/${split}/${cls}/1.jpg`, Buffer.from(`${split}-${cls}`));
  }
  return zip.toBuffer();
};

const zipBytes = buildZip();
const zipSha = createHash('sha256').update(zipBytes).digest('hex');
let server: Server;
let baseUrl: string;
let requests = 0;
let dataDir: string;

beforeAll(async () => {
  server = createServer((req, res) => {
    requests++;
    if (req.url === '/pets.zip') {
      res.writeHead(200, { 'content-type': 'application/zip', 'content-length': zipBytes.length });
      res.end(zipBytes);
    } else {
      res.writeHead(404).end();
    }
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  baseUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
afterAll(async () => {
  await new Promise((resolve) => server.close(resolve));
});
beforeEach(async () => {
  requests = 0;
  dataDir = await mkdtemp(path.join(os.tmpdir(), 'xp-datasets-'));
  return () => rm(dataDir, { recursive: true, force: true });
});

const config = (overrides: Partial<DataConfig> = {}): DataConfig => ({
  url: `${baseUrl}/pets.zip`,
  train: 'pets/train',
  validation: 'pets/validation',
  image_size: [150, 150],
  batch_size: 20,
  class_mode: 'binary',
  interpolation: 'nearest',
  ...overrides,
});
const quiet = () => new PassThrough().resume();

describe('resolveDataset', () => {
  it('downloads and unpacks once, then reuses the unpacked folders', async () => {
    const progress = new PassThrough();
    let log = '';
    progress.on('data', (chunk) => (log += chunk));
    const first = await resolveDataset(config({ sha256: zipSha.toUpperCase() }), {
      dataDir,
      baseDir: '/unused',
      progress,
    });
    expect(first).toEqual({
      trainDir: path.join(dataDir, 'pets/train'),
      validationDir: path.join(dataDir, 'pets/validation'),
    });
    expect((await stat(path.join(first.trainDir, 'dogs', '1.jpg'))).size).toBe('train-dogs'.length);
    expect(requests).toBe(1);
    expect(log).toContain('pets.zip');
    expect(await readdir(dataDir)).toEqual(['.xp-sources', 'pets']); // no temp files left

    const second = await resolveDataset(config({ sha256: zipSha }), { dataDir, baseDir: '/unused', progress: quiet() });
    expect(second).toEqual(first);
    expect(requests).toBe(1);
  });

  it('takes the data dir from XP_DATA_DIR when no option is given', async () => {
    const saved = process.env.XP_DATA_DIR;
    process.env.XP_DATA_DIR = dataDir;
    try {
      const resolved = await resolveDataset(config(), { baseDir: '/unused', progress: quiet() });
      expect(resolved.trainDir).toBe(path.join(dataDir, 'pets/train'));
    } finally {
      if (saved === undefined) delete process.env.XP_DATA_DIR;
      else process.env.XP_DATA_DIR = saved;
    }
  });

  it('fails on a sha256 mismatch and leaves nothing behind', async () => {
    const error = await resolveDataset(config({ sha256: '0'.repeat(64) }), {
      dataDir,
      baseDir: '/',
      progress: quiet(),
    }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(DataError);
    expect((error as Error).message).toMatch(/Checksum mismatch.*expected sha256 0{64}, got [0-9a-f]{64}/);
    expect(await readdir(dataDir)).toEqual([]);
  });

  it('reports an HTTP error without leaving files', async () => {
    await expect(
      resolveDataset(config({ url: `${baseUrl}/missing.zip` }), { dataDir, baseDir: '/', progress: quiet() }),
    ).rejects.toThrow(/HTTP 404/);
    expect(await readdir(dataDir)).toEqual([]);
  });

  it('names a train folder the archive does not contain', async () => {
    await expect(
      resolveDataset(config({ train: 'pets/training' }), { dataDir, baseDir: '/', progress: quiet() }),
    ).rejects.toThrow(/has no folder pets\/training \(data.train\)/);
  });

  it('resolves paths against the experiment folder when there is no url', async () => {
    const resolved = await resolveDataset(config({ url: undefined, train: 'data/train', validation: '/abs/val' }), {
      dataDir,
      baseDir: '/home/me/exp',
    });
    expect(resolved).toEqual({ trainDir: '/home/me/exp/data/train', validationDir: '/abs/val' });
    expect(requests).toBe(0);
  });
});
