// Hostile data: symbolic-link loops and links out of the image folders, zip bombs and zip-slip entries, servers that
// never answer or stall, Ctrl-C during a download, a changed url or sha256, file:// URLs. Each case names what xp
// guarantees; fixtures are tiny zips and images generated in a temp folder and a local HTTP server on 127.0.0.1.
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, readFile, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { createServer, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { PassThrough } from 'node:stream';
import { pathToFileURL } from 'node:url';
import { crc32, deflateRawSync } from 'node:zlib';
import sharp from 'sharp';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type { DataConfig } from '../../src/config/types.ts';
import { resolveDataset } from '../../src/data/dataset.ts';
import { scanClasses } from '../../src/data/scan.ts';
import { extractZip, zipLimits } from '../../src/data/zip.ts';
import { DataError } from '../../src/errors.ts';
import { prepareData } from '../../src/train/data.ts';

const repo = path.resolve(import.meta.dirname, '../..');
let tmp: string;
beforeEach(async () => {
  tmp = await mkdtemp(path.join(os.tmpdir(), 'xp-hostile-data-'));
  return () => rm(tmp, { recursive: true, force: true });
});

const touch = async (...files: string[]): Promise<void> => {
  for (const file of files) {
    await mkdir(path.dirname(path.join(tmp, file)), { recursive: true });
    await writeFile(path.join(tmp, file), '');
  }
};
const relativeFiles = (files: { path: string }[], root: string) => files.map((f) => path.relative(root, f.path));

describe('symbolic links in image folders', () => {
  it('a link back up (cats/up -> ..) is skipped by default and counted, instead of labelling every image a cat', async () => {
    await touch('train/cats/1.jpg', 'train/cats/2.jpg', 'train/dogs/3.jpg');
    await symlink('..', path.join(tmp, 'train/cats/up'));
    const scan = await scanClasses(path.join(tmp, 'train'));
    expect(relativeFiles(scan.files, path.join(tmp, 'train'))).toEqual(['cats/1.jpg', 'cats/2.jpg', 'dogs/3.jpg']);
    expect(scan.links).toEqual({ skipped: 1, dangling: 0, loops: 0 });
  });

  it('with follow_links a loop is still walked once: links back up, to the class itself and twice to one folder', async () => {
    await touch('train/cats/1.jpg', 'train/cats/a/2.jpg', 'train/dogs/3.jpg', 'outside/d/4.jpg');
    await symlink('..', path.join(tmp, 'train/cats/up'));
    await symlink('..', path.join(tmp, 'train/cats/a/self'));
    await symlink(path.join(tmp, 'outside/d'), path.join(tmp, 'train/cats/l1'));
    await symlink(path.join(tmp, 'outside/d'), path.join(tmp, 'train/cats/l2'));
    await symlink(path.join(tmp, 'outside'), path.join(tmp, 'outside/d/back'));
    const scan = await scanClasses(path.join(tmp, 'train'), { followLinks: true });
    expect(relativeFiles(scan.files, path.join(tmp, 'train'))).toEqual([
      'cats/1.jpg',
      'cats/a/2.jpg',
      'cats/l1/4.jpg',
      'dogs/3.jpg',
    ]);
    expect(scan.links).toEqual({ skipped: 0, dangling: 0, loops: 4 });
  });

  it('a diamond of links (two links per level, ten levels) is walked once per folder, not 2^10 times', async () => {
    for (let level = 0; level <= 10; level++) await touch(`d${level}/${level}.jpg`);
    for (let level = 0; level < 10; level++) {
      for (const name of ['x', 'y']) await symlink(path.join(tmp, `d${level + 1}`), path.join(tmp, `d${level}`, name));
    }
    await mkdir(path.join(tmp, 'train'));
    await symlink(path.join(tmp, 'd0'), path.join(tmp, 'train/cats'));
    const scan = await scanClasses(path.join(tmp, 'train'), { followLinks: true });
    expect(scan.files).toHaveLength(11);
  });

  it('links to files and folders outside are not used by default, and are with follow_links', async () => {
    await touch('train/cats/1.jpg', 'train/dogs/2.jpg', 'secret/photo.jpg', 'elsewhere/3.jpg');
    await symlink(path.join(tmp, 'secret/photo.jpg'), path.join(tmp, 'train/cats/linked.jpg'));
    await symlink(path.join(tmp, 'elsewhere'), path.join(tmp, 'train/dogs/more'));
    const plain = await scanClasses(path.join(tmp, 'train'));
    expect(relativeFiles(plain.files, path.join(tmp, 'train'))).toEqual(['cats/1.jpg', 'dogs/2.jpg']);
    expect(plain.links.skipped).toBe(2);
    const followed = await scanClasses(path.join(tmp, 'train'), { followLinks: true });
    expect(relativeFiles(followed.files, path.join(tmp, 'train'))).toEqual([
      'cats/1.jpg',
      'cats/linked.jpg',
      'dogs/2.jpg',
      'dogs/more/3.jpg',
    ]);
  });

  it('a linked class folder is skipped by default, and the error says how to use it', async () => {
    await touch('real/cats/1.jpg');
    await mkdir(path.join(tmp, 'train'));
    await symlink(path.join(tmp, 'real/cats'), path.join(tmp, 'train/cats'));
    const error = await scanClasses(path.join(tmp, 'train')).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(DataError);
    expect((error as DataError).hint).toContain('data.follow_links: true');
  });

  it('dangling links are counted with follow_links, not passed to the decoder', async () => {
    await touch('train/cats/1.jpg', 'train/dogs/2.jpg');
    await symlink(path.join(tmp, 'gone.jpg'), path.join(tmp, 'train/cats/gone.jpg'));
    const scan = await scanClasses(path.join(tmp, 'train'), { followLinks: true });
    expect(relativeFiles(scan.files, path.join(tmp, 'train'))).toEqual(['cats/1.jpg', 'dogs/2.jpg']);
    expect(scan.links).toEqual({ skipped: 0, dangling: 1, loops: 0 });
  });

  it('preparing data warns once per split with the count of skipped links; follow_links uses them', async () => {
    const png = await sharp({ create: { width: 8, height: 8, channels: 3, background: '#808080' } })
      .png()
      .toBuffer();
    for (const file of [
      'train/cats/1.png',
      'train/dogs/2.png',
      'validation/cats/3.png',
      'validation/dogs/4.png',
      'extra/5.png',
    ]) {
      await mkdir(path.dirname(path.join(tmp, file)), { recursive: true });
      await writeFile(path.join(tmp, file), png);
    }
    await symlink('..', path.join(tmp, 'train/cats/up'));
    await symlink(path.join(tmp, 'extra/5.png'), path.join(tmp, 'train/dogs/5.png'));
    await symlink(path.join(tmp, 'nowhere.png'), path.join(tmp, 'train/dogs/6.png'));
    const data = (follow_links?: boolean): DataConfig => ({
      train: 'train',
      validation: 'validation',
      image_size: [8, 8],
      batch_size: 2,
      class_mode: 'binary',
      interpolation: 'nearest',
      follow_links,
    });

    const warnings: string[] = [];
    const plain = await prepareData(data(), { baseDir: tmp, onWarning: (m) => warnings.push(m) });
    expect(plain.train.count).toBe(2);
    expect(warnings).toEqual([`3 symbolic links in ${path.join(tmp, 'train')} skipped (data.follow_links is false)`]);

    warnings.length = 0;
    const followed = await prepareData(data(true), { baseDir: tmp, onWarning: (m) => warnings.push(m) });
    expect(followed.train.count).toBe(3);
    expect(warnings).toEqual([
      `1 dangling symbolic link and 1 symbolic link back to a folder already walked in ${path.join(tmp, 'train')} skipped`,
    ]);
  });
});

// A zip written byte by byte, so tests control names, declared sizes and modes that zip libraries normalise.
interface ZipEntry {
  name: string;
  data?: Buffer;
  /** Unix mode stored in the external attributes (made by Unix). */
  mode?: number;
  /** Uncompressed size written to the headers, when it should lie. */
  declaredSize?: number;
}
function makeZip(entries: ZipEntry[]): Buffer {
  const locals: Buffer[] = [];
  const centrals: Buffer[] = [];
  let offset = 0;
  for (const entry of entries) {
    const data = entry.data ?? Buffer.alloc(0);
    const compressed = deflateRawSync(data);
    const name = Buffer.from(entry.name);
    const size = entry.declaredSize ?? data.length;
    const local = Buffer.alloc(30);
    local.writeUInt32LE(0x04034b50, 0);
    local.writeUInt16LE(20, 4);
    local.writeUInt16LE(0x800, 6);
    local.writeUInt16LE(8, 8);
    local.writeUInt32LE(crc32(data), 14);
    local.writeUInt32LE(compressed.length, 18);
    local.writeUInt32LE(size, 22);
    local.writeUInt16LE(name.length, 26);
    const central = Buffer.alloc(46);
    central.writeUInt32LE(0x02014b50, 0);
    central.writeUInt16LE((3 << 8) | 20, 4);
    central.writeUInt16LE(20, 6);
    central.writeUInt16LE(0x800, 8);
    central.writeUInt16LE(8, 10);
    central.writeUInt32LE(crc32(data), 16);
    central.writeUInt32LE(compressed.length, 20);
    central.writeUInt32LE(size, 24);
    central.writeUInt16LE(name.length, 28);
    central.writeUInt32LE(((entry.mode ?? (entry.name.endsWith('/') ? 0o40777 : 0o100666)) << 16) >>> 0, 38);
    central.writeUInt32LE(offset, 42);
    locals.push(local, name, compressed);
    centrals.push(central, name);
    offset += 30 + name.length + compressed.length;
  }
  const directory = Buffer.concat(centrals);
  const end = Buffer.alloc(22);
  end.writeUInt32LE(0x06054b50, 0);
  end.writeUInt16LE(entries.length, 8);
  end.writeUInt16LE(entries.length, 10);
  end.writeUInt32LE(directory.length, 12);
  end.writeUInt32LE(offset, 16);
  return Buffer.concat([...locals, directory, end]);
}

const pets = (version: string): Buffer =>
  makeZip(
    ['train', 'validation'].flatMap((split) =>
      ['cats', 'dogs'].map((cls) => ({
        name: `pets/${split}/${cls}/1.jpg`,
        data: Buffer.from(`${version} ${split} ${cls}`),
      })),
    ),
  );

let server: Server;
let baseUrl: string;
const routes = new Map<string, (res: ServerResponse) => void>();
const requests: string[] = [];
beforeAll(async () => {
  server = createServer((req, res) => {
    requests.push(req.url ?? '');
    const route = routes.get(req.url ?? '');
    if (route) route(res);
    else res.writeHead(404).end();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  baseUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
afterAll(async () => {
  server.closeAllConnections();
  await new Promise((resolve) => server.close(resolve));
});
const serve = (route: string, body: Buffer): string => {
  routes.set(route, (res) => res.writeHead(200, { 'content-length': body.length }).end(body));
  return `${baseUrl}${route}`;
};
const sha = (bytes: Buffer): string => createHash('sha256').update(bytes).digest('hex');
const quiet = () => new PassThrough().resume();
const petsConfig = (overrides: Partial<DataConfig>): DataConfig => ({
  train: 'pets/train',
  validation: 'pets/validation',
  image_size: [32, 32],
  batch_size: 2,
  class_mode: 'binary',
  interpolation: 'nearest',
  ...overrides,
});
const resolveIn = (dataDir: string, overrides: Partial<DataConfig>) =>
  resolveDataset(petsConfig(overrides), { dataDir, baseDir: '/unused', progress: quiet() });
const leftovers = async (dir: string) =>
  (await readdir(dir)).filter((name) => /^\.(download|extract|replaced)-/.test(name));
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

describe('zip archives', () => {
  const unpack = async (zip: Buffer, limits = zipLimits()) => {
    const file = path.join(tmp, 'archive.zip');
    await writeFile(file, zip);
    const dest = path.join(tmp, 'out');
    await mkdir(dest);
    const error = await extractZip(file, dest, 'http://example.test/archive.zip', { limits }).catch((e: unknown) => e);
    return { dest, error: error as DataError | undefined };
  };

  it('a zip bomb (an entry expanding 1000:1) is refused before anything is written, naming the URL and the entry', async () => {
    const { dest, error } = await unpack(makeZip([{ name: 'bomb.bin', data: Buffer.alloc(20 * 1024 * 1024) }]));
    expect(error).toBeInstanceOf(DataError);
    expect(error!.message).toMatch(
      /^Refusing to unpack http:\/\/example.test\/archive.zip: entry bomb.bin expands \d+:1 \(20.0 MiB\), above the limit of 100:1/,
    );
    expect(error!.hint).toContain('XP_UNZIP_MAX_RATIO');
    expect(await readdir(dest)).toEqual([]);
  });

  it('an entry above the per-entry limit, and entries above the total limit, are refused', async () => {
    const random = () => randomBytes(600 * 1024); // incompressible: only the size limits apply
    const big = { ...zipLimits(), entryBytes: 500 * 1024 };
    const one = await unpack(makeZip([{ name: 'a.bin', data: random() }]), big);
    expect(one.error?.message).toMatch(/entry a.bin is 0.6 MiB uncompressed, above the limit of 0.5 MiB per entry/);
    await rm(path.join(tmp, 'out'), { recursive: true });
    const total = await unpack(
      makeZip([
        { name: 'a.bin', data: random() },
        { name: 'b.bin', data: random() },
      ]),
      { ...zipLimits(), totalBytes: 1024 * 1024 },
    );
    expect(total.error?.message).toMatch(/entries add up to more than 1.0 MiB/);
  });

  it('many small entries that expand 1000:1 together are refused as a whole', async () => {
    const zeros = Buffer.alloc(1024 * 1024);
    const { dest, error } = await unpack(
      makeZip(Array.from({ length: 80 }, (_, i) => ({ name: `z/${i}.bin`, data: zeros }))),
    );
    expect(error?.message).toMatch(/its entries expand \d+:1 overall \(80.0 MiB\), above the limit of 100:1/);
    expect(await readdir(dest)).toEqual([]);
  });

  it('an archive with a file and a folder of the same name is a DataError, not a stack trace', async () => {
    const { error } = await unpack(
      makeZip([
        { name: 'a', data: Buffer.from('x') },
        { name: 'a/b.jpg', data: Buffer.from('y') },
      ]),
    );
    expect(error).toBeInstanceOf(DataError);
    expect(error!.message).toMatch(/^Could not unpack http:\/\/example.test\/archive.zip: entry a\/b.jpg: /);
  });

  it('limits can be raised from the environment', () => {
    expect(
      zipLimits({ XP_UNZIP_MAX_ENTRY_MB: '2', XP_UNZIP_MAX_TOTAL_MB: '3', XP_UNZIP_MAX_RATIO: '7' }),
    ).toMatchObject({ entryBytes: 2 * 1024 * 1024, totalBytes: 3 * 1024 * 1024, ratio: 7 });
  });

  it('an entry inflating past its declared size is cut off there (streamed, never held in memory)', async () => {
    const { error } = await unpack(makeZip([{ name: 'liar.bin', data: Buffer.alloc(512 * 1024), declaredSize: 100 }]));
    expect(error?.message).toMatch(/entry liar.bin inflates past its declared 100 bytes/);
    await rm(path.join(tmp, 'out'), { recursive: true });
    const streamed = await unpack(
      makeZip([{ name: 'big-liar.bin', data: Buffer.alloc(9 * 1024 * 1024), declaredSize: 5 * 1024 * 1024 }]),
      { ...zipLimits(), ratio: 1e6 },
    );
    expect(streamed.error?.message).toMatch(/entry big-liar.bin inflates past its declared 5242880 bytes/);
  });

  it('zip-slip entries (../, absolute) never land outside the target folder', async () => {
    for (const name of ['../evil.txt', '/tmp/evil-xp.txt', 'ok/../../evil.txt', '..\\evil.txt']) {
      const { error } = await unpack(makeZip([{ name, data: Buffer.from('x') }]));
      expect(error?.message).toContain('would be written outside the data folder');
      expect(existsSync(path.join(tmp, 'evil.txt'))).toBe(false);
      await rm(path.join(tmp, 'out'), { recursive: true });
    }
    expect(existsSync('/tmp/evil-xp.txt')).toBe(false);
  });

  it('unpacked files and folders honour the umask (not world-writable), and link entries are not created', async () => {
    const saved = process.umask(0o022);
    try {
      const { dest, error } = await unpack(
        makeZip([
          { name: 'pets/', mode: 0o40777 },
          { name: 'pets/cats/1.jpg', data: Buffer.from('cat'), mode: 0o100777 },
          { name: 'pets/link.jpg', data: Buffer.from('/etc/passwd'), mode: 0o120777 },
        ]),
      );
      expect(error).toBeUndefined();
      expect((await stat(path.join(dest, 'pets/cats/1.jpg'))).mode & 0o777).toBe(0o644);
      expect((await stat(path.join(dest, 'pets'))).mode & 0o777).toBe(0o755);
      expect((await stat(path.join(dest, 'pets/cats'))).mode & 0o777).toBe(0o755);
      expect(existsSync(path.join(dest, 'pets/link.jpg'))).toBe(false);
    } finally {
      process.umask(saved);
    }
  });

  it('resolving a data set with a zip bomb fails with a DataError and leaves no temp files', async () => {
    const url = serve(
      '/bomb.zip',
      makeZip([{ name: 'pets/train/cats/bomb.jpg', data: Buffer.alloc(20 * 1024 * 1024) }]),
    );
    const dataDir = path.join(tmp, 'data');
    await expect(resolveIn(dataDir, { url })).rejects.toThrow(
      `Refusing to unpack ${url}: entry pets/train/cats/bomb.jpg expands`,
    );
    expect(await readdir(dataDir)).toEqual([]);
  });
});

describe('downloads from servers that never answer or stall', () => {
  it('a server that never answers: a DataError naming the URL after the connect timeout, no temp files', async () => {
    routes.set('/silent.zip', () => {}); // accepts the connection, never answers
    const dataDir = path.join(tmp, 'data');
    const started = Date.now();
    const error = await withEnv({ XP_DOWNLOAD_CONNECT_TIMEOUT: '1' }, () =>
      resolveIn(dataDir, { url: `${baseUrl}/silent.zip` }).catch((e: unknown) => e),
    );
    expect(Date.now() - started).toBeLessThan(5000);
    expect(error).toBeInstanceOf(DataError);
    expect((error as DataError).message).toBe(`Download of ${baseUrl}/silent.zip failed: no answer within 1 s`);
    expect((error as DataError).hint).toContain('XP_DOWNLOAD_CONNECT_TIMEOUT');
    expect(await leftovers(dataDir)).toEqual([]);
  }, 15_000);

  it('a server that stalls mid-body: a DataError after the idle timeout, no temp files', async () => {
    const body = pets('v1');
    routes.set('/stall.zip', (res) => {
      res.writeHead(200, { 'content-length': body.length });
      res.write(body.subarray(0, 100)); // then nothing more
    });
    const dataDir = path.join(tmp, 'data');
    const started = Date.now();
    const error = await withEnv({ XP_DOWNLOAD_TIMEOUT: '1' }, () =>
      resolveIn(dataDir, { url: `${baseUrl}/stall.zip` }).catch((e: unknown) => e),
    );
    expect(Date.now() - started).toBeLessThan(5000);
    expect(error).toBeInstanceOf(DataError);
    expect((error as DataError).message).toBe(
      `Download of ${baseUrl}/stall.zip failed: no data for 1 s after 100 bytes`,
    );
    expect((error as DataError).hint).toContain('XP_DOWNLOAD_TIMEOUT');
    expect(await leftovers(dataDir)).toEqual([]);
  }, 15_000);

  it('the first Ctrl-C during `xp run` ends a stalled download, leaving no .download-*.zip', async () => {
    const body = pets('v1');
    routes.set('/slow.zip', (res) => {
      res.writeHead(200, { 'content-length': body.length });
      res.write(body.subarray(0, 100));
    });
    const dataDir = path.join(tmp, 'data');
    const file = path.join(tmp, 'exp.yaml');
    await writeFile(
      file,
      `name: ctrl-c\ndata: {url: "${baseUrl}/slow.zip", train: pets/train, validation: pets/validation, image_size: [32, 32]}\nbackbone: {name: mobilenet_v2, cut_layer: block_2_add}\ntraining: {epochs: 1}\n`,
    );
    const child = spawn(
      process.execPath,
      [path.join(repo, 'bin/xp.js'), 'run', file, '--no-track', '--data-dir', dataDir],
      { cwd: repo, env: { ...process.env, XP_RUNS_DIR: path.join(tmp, 'runs') } },
    );
    let output = '';
    child.stdout.on('data', (chunk) => (output += chunk));
    child.stderr.on('data', (chunk) => (output += chunk));
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
    for (
      let i = 0;
      i < 600 &&
      !(
        output.includes('Downloading') &&
        (await readdir(dataDir).catch(() => [])).some((n) => n.startsWith('.download-'))
      );
      i++
    ) {
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    expect(output).toContain('Downloading');
    const interrupted = Date.now();
    child.kill('SIGINT');
    const code = await Promise.race([
      exited,
      new Promise<'hung'>((resolve) => setTimeout(() => resolve('hung'), 10_000)),
    ]);
    if (code === 'hung') child.kill('SIGKILL');
    expect(code).not.toBe('hung');
    expect(code).not.toBe(0);
    expect(Date.now() - interrupted).toBeLessThan(10_000);
    expect(output).toContain(`Download of ${baseUrl}/slow.zip interrupted`);
    expect(output).not.toMatch(/\n\s+at /);
    expect(await readdir(dataDir)).toEqual([]);
  }, 90_000);
});

describe('the data set cache', () => {
  it('a changed url fetches the new archive instead of reusing the folder unpacked from the old one', async () => {
    const dataDir = path.join(tmp, 'data');
    const first = await resolveIn(dataDir, { url: serve('/v1.zip', pets('v1')) });
    expect(await readFile(path.join(first.trainDir, 'cats/1.jpg'), 'utf8')).toBe('v1 train cats');
    const progress = new PassThrough();
    let said = '';
    progress.on('data', (chunk) => (said += chunk));
    const url = serve('/v2.zip', pets('v2'));
    const second = await resolveDataset(petsConfig({ url }), { dataDir, baseDir: '/unused', progress });
    expect(await readFile(path.join(second.trainDir, 'cats/1.jpg'), 'utf8')).toBe('v2 train cats');
    expect(said).toContain(
      `${path.join(dataDir, 'pets')} was unpacked from ${baseUrl}/v1.zip (sha256 ${sha(pets('v1'))}), not from ${url}: fetching it again`,
    );
    expect(await leftovers(dataDir)).toEqual([]);
  });

  it('a changed sha256 is verified: the new archive when it matches, a checksum error (old folder intact) when not', async () => {
    const dataDir = path.join(tmp, 'data');
    const url = serve('/pets.zip', pets('v1'));
    const { trainDir } = await resolveIn(dataDir, { url, sha256: sha(pets('v1')) });
    requests.length = 0;
    await resolveIn(dataDir, { url, sha256: sha(pets('v1')).toUpperCase() });
    expect(requests).toEqual([]); // same url and sha256: reused

    serve('/pets.zip', pets('v2'));
    await resolveIn(dataDir, { url, sha256: sha(pets('v2')) });
    expect(await readFile(path.join(trainDir, 'cats/1.jpg'), 'utf8')).toBe('v2 train cats');

    await expect(resolveIn(dataDir, { url, sha256: 'a'.repeat(64) })).rejects.toThrow(/Checksum mismatch/);
    expect(await readFile(path.join(trainDir, 'cats/1.jpg'), 'utf8')).toBe('v2 train cats');
  });

  it('temp files of a killed download (its pid gone) are removed by the next download; a live one is left alone', async () => {
    const dataDir = path.join(tmp, 'data');
    const dead = spawn(process.execPath, ['-e', '']);
    await new Promise((resolve) => dead.on('exit', resolve));
    await touch(
      `data/.download-${dead.pid}-0badf00d.zip`,
      `data/.extract-${dead.pid}-0badf00d/pets/x.jpg`,
      `data/.download-${process.pid}-0123abcd.zip`,
    );
    await resolveIn(dataDir, { url: serve('/v1.zip', pets('v1')) });
    expect(await leftovers(dataDir)).toEqual([`.download-${process.pid}-0123abcd.zip`]);
  });

  it('folders put in the data directory by hand are used as they are, without a download', async () => {
    const dataDir = path.join(tmp, 'data');
    for (const dir of ['pets/train/cats', 'pets/validation/cats'])
      await mkdir(path.join(dataDir, dir), { recursive: true });
    requests.length = 0;
    await resolveIn(dataDir, { url: `${baseUrl}/never.zip` });
    expect(requests).toEqual([]);
  });
});

describe('file:// URLs', () => {
  it('a local zip given as file:// is unpacked like a download, and checked against sha256', async () => {
    const zip = path.join(tmp, 'my pets.zip');
    await writeFile(zip, pets('local'));
    const dataDir = path.join(tmp, 'data');
    const url = pathToFileURL(zip).href;
    const { trainDir } = await resolveIn(dataDir, { url, sha256: sha(pets('local')) });
    expect(await readFile(path.join(trainDir, 'dogs/1.jpg'), 'utf8')).toBe('local train dogs');
    expect(existsSync(zip)).toBe(true);
    await expect(resolveIn(path.join(tmp, 'other'), { url, sha256: 'b'.repeat(64) })).rejects.toThrow(
      /Checksum mismatch/,
    );
  });

  it('a missing file or a relative file URL is a DataError saying what to write', async () => {
    const missing = await resolveIn(path.join(tmp, 'data'), {
      url: pathToFileURL(path.join(tmp, 'nope.zip')).href,
    }).catch((e: unknown) => e);
    expect(missing).toBeInstanceOf(DataError);
    expect((missing as DataError).message).toContain(`${path.join(tmp, 'nope.zip')} does not exist`);
    const relative = await resolveIn(path.join(tmp, 'data'), { url: 'file://pets.zip' }).catch((e: unknown) => e);
    expect(relative).toBeInstanceOf(DataError);
    expect((relative as DataError).hint).toContain('file:///');
  });
});
