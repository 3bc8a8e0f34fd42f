// Hostile download servers: one that trickles a byte now and then (each byte restarts the idle timeout, so only an
// overall deadline ends it), one too slow for the minimum rate, and one fast enough to go on past the deadline. Every
// kind of download is tried: an experiment file by URL (`xp check <url>`), a data archive, the official Keras weights
// and weights given by URL. A local HTTP server on 127.0.0.1 stands in for the web; the deadline is set low.
import { execa } from 'execa';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { createServer, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { PassThrough } from 'node:stream';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { resolveDataset } from '../../src/data/dataset.ts';
import { DataError, ModelError, XpError } from '../../src/errors.ts';
import { kerasWeightsPath } from '../../src/model/keras-weights.ts';
import { localWeights } from '../../src/model/remote-weights.ts';
import { downloadLimits, fetchToFile } from '../../src/remote/fetch.ts';

const repo = path.resolve(import.meta.dirname, '../..');
const bin = path.join(repo, 'bin', 'xp.js');

let tmp: string;
beforeEach(async () => {
  tmp = await mkdtemp(path.join(os.tmpdir(), 'xp-hostile-downloads-'));
  return () => rm(tmp, { recursive: true, force: true });
});

let server: Server;
let baseUrl: string;
const timers = new Set<NodeJS.Timeout>();

/** Sends `chunk` every `everyMs` until `total` bytes are sent (declared as content-length up front). */
function drip(res: ServerResponse, chunk: Buffer, everyMs: number, total: number): void {
  res.writeHead(200, { 'content-length': total });
  let sent = 0;
  const timer = setInterval(() => {
    const piece = chunk.subarray(0, Math.min(chunk.length, total - sent));
    res.write(piece);
    sent += piece.length;
    if (sent >= total) {
      clearInterval(timer);
      res.end();
    }
  }, everyMs);
  timers.add(timer);
  res.on('close', () => clearInterval(timer));
}

beforeAll(async () => {
  server = createServer((req, res) => {
    const url = req.url ?? '';
    // One byte every 200 ms, never done within the test: the idle timeout (60 s) never fires.
    if (url.includes('/trickle/')) drip(res, Buffer.from('#'), 200, 100_000);
    // 2 KB every 100 ms: 20 KB/s, steady but below the minimum rate set below.
    else if (url.includes('/slow/')) drip(res, Buffer.alloc(2000, 35), 100, 10_000_000);
    // 100 KB every 100 ms: 1 MB/s for 2.5 s, well above the minimum rate.
    else if (url.includes('/steady/')) drip(res, Buffer.alloc(100_000, 35), 100, 2_500_000);
    else res.writeHead(404).end();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  baseUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
afterAll(async () => {
  for (const timer of timers) clearInterval(timer);
  server.closeAllConnections();
  await new Promise((resolve) => server.close(resolve));
});

const LIMITS = { XP_DOWNLOAD_DEADLINE: '1', XP_DOWNLOAD_MIN_RATE: '100' };

const withEnv = async <T>(vars: Record<string, string>, work: () => Promise<T>): Promise<T> => {
  const saved = Object.fromEntries(Object.keys(vars).map((k) => [k, process.env[k]]));
  Object.assign(process.env, vars);
  try {
    return await work();
  } finally {
    for (const [k, v] of Object.entries(saved)) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
  }
};

/** Runs `work`, returning what it threw and how long it took. */
async function timed(work: () => Promise<unknown>): Promise<{ error: unknown; ms: number }> {
  const started = Date.now();
  const error = await work().then(
    () => undefined,
    (e: unknown) => e,
  );
  return { error, ms: Date.now() - started };
}

describe('an overall deadline for every download, and a minimum rate past it', () => {
  it('the limits come from XP_DOWNLOAD_DEADLINE (seconds) and XP_DOWNLOAD_MIN_RATE (KB/s), with defaults', () => {
    expect(downloadLimits({})).toEqual({ connect: 30, idle: 60, deadline: 300, minRate: 100_000 });
    expect(downloadLimits({ XP_DOWNLOAD_DEADLINE: '1200', XP_DOWNLOAD_MIN_RATE: '10' })).toMatchObject({
      deadline: 1200,
      minRate: 10_000,
    });
    expect(downloadLimits({ XP_DOWNLOAD_DEADLINE: 'soon', XP_DOWNLOAD_MIN_RATE: '-1' })).toMatchObject({
      deadline: 300,
      minRate: 100_000,
    });
  });

  it('`xp check <url>` of a server that trickles one byte at a time exits 2 soon after the deadline, naming the URL, the bytes and the variable', async () => {
    const url = `${baseUrl}/trickle/exp.yaml`;
    const started = Date.now();
    const result = await execa(process.execPath, [bin, 'check', url], {
      reject: false,
      timeout: 30_000,
      env: { ...LIMITS, XP_CACHE_DIR: path.join(tmp, 'cache') },
    });
    expect(result.timedOut).toBe(false);
    expect(Date.now() - started).toBeLessThan(15_000);
    expect(result.exitCode).toBe(2);
    expect(result.stderr).toMatch(
      new RegExp(
        `${url.replace(/[.]/g, '\\.')}: cannot fetch: still downloading after 1 s \\(\\d+ bytes received, \\d+ bytes/s over the last 1 s; a download must keep 100 KB/s past 1 s\\)`,
      ),
    );
    expect(result.stderr).toContain('XP_DOWNLOAD_DEADLINE');
    expect(result.stderr).not.toMatch(/\n\s+at /);
    expect(await readdir(path.join(tmp, 'cache', 'remote')).catch(() => [])).not.toContainEqual(
      expect.stringMatching(/\.part$/),
    );
  }, 40_000);

  it('a data archive that trickles: a DataError soon after the deadline, no temp files left', async () => {
    const dataDir = path.join(tmp, 'data');
    const { error, ms } = await timed(() =>
      withEnv(LIMITS, () =>
        resolveDataset(
          {
            url: `${baseUrl}/trickle/pets.zip`,
            train: 'pets/train',
            validation: 'pets/validation',
            image_size: [32, 32],
          } as never,
          { dataDir, baseDir: '/unused', progress: new PassThrough() },
        ),
      ),
    );
    expect(ms).toBeLessThan(8000);
    expect(error).toBeInstanceOf(DataError);
    expect((error as DataError).message).toMatch(
      new RegExp(`^Download of ${baseUrl}/trickle/pets\\.zip failed: still downloading after 1 s`),
    );
    expect((error as DataError).hint).toContain('XP_DOWNLOAD_DEADLINE');
    expect(await readdir(dataDir)).toEqual([]);
  }, 20_000);

  it('the official Keras weights from a server that trickles: a ModelError soon after the deadline', async () => {
    const { error, ms } = await timed(() =>
      withEnv(LIMITS, () =>
        kerasWeightsPath(
          { file: 'w.h5', urlPath: 'trickle/w.h5' },
          { cacheDir: path.join(tmp, 'models'), kerasDir: path.join(tmp, 'keras'), weightsBaseUrl: `${baseUrl}/` },
        ),
      ),
    );
    expect(ms).toBeLessThan(8000);
    expect(error).toBeInstanceOf(ModelError);
    expect((error as ModelError).message).toMatch(
      new RegExp(`^Could not download the Keras weights from ${baseUrl}/trickle/w\\.h5: still downloading after 1 s`),
    );
    expect((error as ModelError).hint).toContain('XP_DOWNLOAD_DEADLINE');
    expect((await readdir(path.join(tmp, 'models'))).filter((n) => n.endsWith('.part'))).toEqual([]);
  }, 20_000);

  it('backbone.weights given by URL, trickled: a ModelError soon after the deadline', async () => {
    const { error, ms } = await timed(() =>
      withEnv({ ...LIMITS, XP_CACHE_DIR: path.join(tmp, 'cache') }, () => localWeights(`${baseUrl}/trickle/b.h5`)),
    );
    expect(ms).toBeLessThan(8000);
    expect(error).toBeInstanceOf(ModelError);
    expect((error as ModelError).message).toContain(
      `cannot fetch ${baseUrl}/trickle/b.h5: still downloading after 1 s`,
    );
    expect((error as ModelError).hint).toContain('XP_DOWNLOAD_DEADLINE');
  }, 20_000);

  it('a steady download below the minimum rate ends at the deadline, saying the rate it kept', async () => {
    const { error, ms } = await timed(() =>
      fetchToFile(`${baseUrl}/slow/x.bin`, path.join(tmp, 'x.bin'), {
        maxBytes: 1e9,
        limits: { ...downloadLimits({}), deadline: 1, minRate: 100_000 },
      }),
    );
    expect(ms).toBeLessThan(5000);
    expect(error).toBeInstanceOf(XpError);
    expect((error as XpError).message).toMatch(
      /still downloading after 1 s \(\d+(\.\d)? KB received, \d+(\.\d)? KB\/s over the last 1 s; a download must keep 100 KB\/s past 1 s\)/,
    );
    expect((error as XpError).hint).toBe(
      'XP_DOWNLOAD_DEADLINE raises the seconds a download may take (default 300); XP_DOWNLOAD_MIN_RATE lowers the KB/s it must keep after them (default 100).',
    );
  }, 20_000);

  it('a large download that keeps the minimum rate goes on past the deadline to the end', async () => {
    const got = await fetchToFile(`${baseUrl}/steady/x.bin`, path.join(tmp, 'x.bin'), {
      maxBytes: 1e9,
      limits: { ...downloadLimits({}), deadline: 1, minRate: 100_000 },
    });
    expect(got.size).toBe(2_500_000);
  }, 20_000);
});
