// The official Keras ImageNet "notop" weight files, found where Keras keeps them (~/.keras/models)
// or in xp's cache, else downloaded once with the published checksum verified. Whichever copy is used is pinned
// in the run's lock (xp.lock) under the URL it comes from.
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import type { BackboneName } from '../config/types.ts';
import { LockError, ModelError, XpError } from '../errors.ts';
import { pin } from '../lock/pin.ts';
import { DownloadError, fetchToFile } from '../remote/fetch.ts';
import { readKerasH5Shapes } from './h5.ts';
import { MAX_WEIGHTS_BYTES } from './remote-weights.ts';
import { cacheDir } from '../paths.ts';
import { keepCredentials } from '../util/credentials.ts';

export const KERAS_WEIGHTS_URL = 'https://storage.googleapis.com/tensorflow/keras-applications/';

export interface KerasWeightsFile {
  file: string;
  /** Path under the base URL. */
  urlPath: string;
  /** md5 as published in keras/src/applications/*.py; Keras publishes none for MobileNetV2. */
  md5?: string;
}

export interface KerasWeightsOptions {
  cacheDir?: string;
  kerasDir?: string;
  weightsBaseUrl?: string;
  /** Replaces the published md5 (for mirrors serving other files, and tests). */
  md5?: string;
}

const MOBILENET_SIZES = [96, 128, 160, 192, 224];

/** Which file Keras loads for `include_top=False` at this input size. */
export function kerasWeightsFile(name: BackboneName, [h, w]: [number, number]): KerasWeightsFile {
  if (name === 'inception_v3') {
    const file = 'inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5';
    return { file, urlPath: `inception_v3/${file}`, md5: 'bcbd6486424b2319ff4ef7d526e38f63' };
  }
  // Like Keras: square inputs of a trained size get that size's weights, anything else the 224 ones.
  const rows = h === w && MOBILENET_SIZES.includes(h) ? h : 224;
  const file = `mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_${rows}_no_top.h5`;
  return { file, urlPath: `mobilenet_v2/${file}` };
}

export function defaultCacheDir(): string {
  return path.join(cacheDir(), 'models');
}

/** Where Keras' get_file keeps downloads: $KERAS_HOME/models, else ~/.keras/models. */
export function defaultKerasDir(): string {
  return path.join(process.env.KERAS_HOME ?? path.join(os.homedir(), '.keras'), 'models');
}

async function digestOf(file: string, algorithm: 'md5' | 'sha256'): Promise<string> {
  const hash = createHash(algorithm);
  await pipeline(createReadStream(file), hash);
  return hash.digest('hex');
}

async function exists(file: string): Promise<boolean> {
  return fs.stat(file).then(
    (s) => s.isFile(),
    () => false,
  );
}

// A found or downloaded file is good when it has the expected md5, or, without one (Keras publishes
// none for MobileNetV2), when its Keras HDF5 structure reads whole (a truncated file does not).
async function verify(file: string, md5: string | undefined): Promise<string | undefined> {
  if (md5) {
    const actual = await digestOf(file, 'md5');
    return actual === md5 ? undefined : `md5 ${actual}, expected ${md5}`;
  }
  return readKerasH5Shapes(file).then(
    () => undefined,
    (error: Error) => error.message,
  );
}

async function download(url: string, dest: string, md5: string | undefined): Promise<void> {
  await fs.mkdir(path.dirname(dest), { recursive: true });
  const temp = `${dest}.${process.pid}.${randomBytes(4).toString('hex')}.part`;
  const manual = `Download it yourself and put it at ${dest} (or in ~/.keras/models/).`;
  try {
    await fetchToFile(url, temp, { maxBytes: MAX_WEIGHTS_BYTES });
    const problem = await verify(temp, md5);
    if (problem) {
      throw new ModelError(`The file downloaded from ${url} is corrupt (${problem}); it was not kept.`, {
        hint: `Try again; if it persists, the server or a proxy alters the file. ${manual}`,
      });
    }
    // Keras' md5 and xp.lock's sha256 both: a file the lock does not expect is not kept.
    await pin(url, await digestOf(temp, 'sha256'));
    await fs.rename(temp, dest);
  } catch (error) {
    await fs.rm(temp, { force: true });
    if (error instanceof DownloadError)
      throw new ModelError(`Could not download the Keras weights from ${url}: ${error.reason}.`, {
        cause: error,
        hint: error.hint ? `${error.hint} ${manual}` : manual,
      });
    if (error instanceof XpError) throw error;
    throw new ModelError(`Could not download the Keras weights from ${url}: ${(error as Error).message}.`, {
      cause: error,
      hint: manual,
    });
  }
}

/** Path of a verified local copy of the Keras weights file, downloading it into cacheDir if needed. */
export async function kerasWeightsPath(spec: KerasWeightsFile, opts: KerasWeightsOptions = {}): Promise<string> {
  const md5 = opts.md5 ?? spec.md5;
  const kerasDir = opts.kerasDir ?? defaultKerasDir();
  const cacheDir = opts.cacheDir ?? defaultCacheDir();
  const base = opts.weightsBaseUrl ?? keepCredentials(process.env.XP_KERAS_WEIGHTS_URL) ?? KERAS_WEIGHTS_URL;
  const url = new URL(spec.urlPath, base.endsWith('/') ? base : `${base}/`).href;
  const inKeras = path.join(kerasDir, spec.file);
  if ((await exists(inKeras)) && !(await verify(inKeras, md5))) return pinCopy(url, inKeras);
  const cached = path.join(cacheDir, spec.file);
  if (await exists(cached)) {
    if (!(await verify(cached, md5))) return pinCopy(url, cached);
    await fs.rm(cached, { force: true }); // ours and corrupt: fetch it again
  }
  await download(url, cached, md5);
  return cached;
}

/** A copy found on disk stands for the bytes at `url`: it is pinned in xp.lock as a download would be. */
async function pinCopy(url: string, file: string): Promise<string> {
  try {
    await pin(url, await digestOf(file, 'sha256'));
  } catch (error) {
    if (error instanceof LockError)
      error.hint = `${error.hint} ${file} holds that content: remove it to download and verify the file again.`;
    throw error;
  }
  return file;
}
