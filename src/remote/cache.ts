// Files fetched by URL (experiment files, the files they extend, weights), kept content-addressed in the cache:
// `<cache>/remote/<sha256>/<name>` holds the bytes, `<cache>/remote/urls/<sha256 of the URL>.json` says which
// bytes a URL served last. A URL is fetched once and then read from the cache until `reload` (xp's --reload, as
// Deno's) fetches it again; within one process it is fetched at most once. Every use, cached or fetched, goes
// through the lock's `pin`.
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import fs from 'node:fs/promises';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import { XpError } from '../errors.ts';
import { pin } from '../lock/pin.ts';
import { remoteCacheDir } from '../paths.ts';
import { fetchToFile } from './fetch.ts';
import { refusedUrl, urlFileName } from './url.ts';
import { authorizationFor } from '../util/credentials.ts';

export interface RemoteFile {
  url: string;
  /** The cached copy on disk, named as the URL's last segment (so that `.h5` stays `.h5`). */
  file: string;
  sha256: string;
  /** True when this call downloaded it (not read from the cache). */
  fetched: boolean;
}

export interface RemoteOptions {
  /** Largest file accepted, in bytes. */
  maxBytes: number;
  /** Fetch again even when the cache has the URL (once per process). */
  reload?: boolean;
  /** Told before a download starts (large files say so, small ones need not). */
  onDownload?: (url: string) => void;
}

const thisProcess = new Map<string, Promise<RemoteFile>>();

/** A local copy of `url`, from the cache or downloaded; throws an XpError naming the URL when it cannot be had. */
export function remoteFile(url: string, opts: RemoteOptions): Promise<RemoteFile> {
  const refused = refusedUrl(url);
  if (refused) return Promise.reject(new XpError(refused));
  let found = thisProcess.get(url);
  if (!found) {
    found = obtain(url, opts);
    thisProcess.set(url, found);
    found.catch(() => thisProcess.delete(url));
  }
  return found.then(async (got) => {
    await pin(url, got.sha256);
    return got;
  });
}

async function obtain(url: string, opts: RemoteOptions): Promise<RemoteFile> {
  const root = remoteCacheDir();
  const index = path.join(root, 'urls', `${sha256Of(url)}.json`);
  if (!opts.reload) {
    const cached = await fromCache(root, index, url);
    if (cached) return cached;
  }
  await fs.mkdir(path.join(root, 'urls'), { recursive: true });
  opts.onDownload?.(url);
  const temp = path.join(root, `.${randomBytes(6).toString('hex')}.part`);
  try {
    const { sha256 } = await fetchToFile(url, temp, { maxBytes: opts.maxBytes, placedBy: 'XP_CACHE_DIR' });
    // What a password was needed for is private: its copy is the user's alone.
    if (authorizationFor(url)) await fs.chmod(temp, 0o600);
    const file = path.join(root, sha256, urlFileName(url));
    await fs.mkdir(path.dirname(file), { recursive: true });
    await fs.rename(temp, file);
    // Written whole, then renamed: a concurrent reader sees the old entry or the new one.
    const entry = `${index}.${randomBytes(4).toString('hex')}`;
    await fs.writeFile(
      entry,
      `${JSON.stringify({ url, sha256, name: urlFileName(url), fetched: new Date().toISOString() }, null, 2)}\n`,
    );
    await fs.rename(entry, index);
    return { url, file, sha256, fetched: true };
  } finally {
    await fs.rm(temp, { force: true });
  }
}

// A cache entry counts only when its bytes still hash to what it recorded; anything else is fetched again.
async function fromCache(root: string, index: string, url: string): Promise<RemoteFile | undefined> {
  const entry = await fs.readFile(index, 'utf8').then(
    (text) => JSON.parse(text) as { url?: string; sha256?: string; name?: string },
    () => undefined,
  );
  const { sha256, name } = entry ?? {};
  if (entry?.url !== url || sha256 === undefined || !/^[0-9a-f]{64}$/.test(sha256) || !name) return undefined;
  const file = path.join(root, sha256, path.basename(name));
  const actual = await fileSha256(file).catch(() => undefined);
  return actual && actual === sha256 ? { url, file, sha256: actual, fetched: false } : undefined;
}

export async function fileSha256(file: string): Promise<string> {
  const hash = createHash('sha256');
  await pipeline(createReadStream(file), hash);
  return hash.digest('hex');
}

const sha256Of = (text: string): string => createHash('sha256').update(text).digest('hex');
