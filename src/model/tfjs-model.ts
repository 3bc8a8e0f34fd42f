// A tfjs LayersModel on disk (model.json and the weight files its manifest lists), read without
// trusting it: the manifest may only name regular files inside the model's folder, and their sizes
// must add up to the bytes its weight entries describe before any of them is read. Loads no
// TensorFlow, so `xp check` can inspect a model too.
import { constants } from 'node:fs';
import fs from 'node:fs/promises';
import path from 'node:path';
import type * as tf from '@tensorflow/tfjs-node'; // types only
import { ModelError } from '../errors.ts';
import { allLayerNames, modelConfigOf, type LayerJson } from './topology.ts';

export type WeightsManifestEntry = Parameters<typeof tf.io.decodeWeights>[1][number];

/** A model.json as tfjs writes it (the models bundled with nsfwjs). */
export interface TfjsModelJson {
  modelTopology: { model_config?: unknown; [key: string]: unknown };
  weightsManifest: { paths: string[]; weights: WeightsManifestEntry[] }[];
}

/** A model.json from a file, as far as readModelJson checked it: locateWeights checks each path and entry. */
export interface ModelJsonRead {
  modelTopology: Record<string, unknown>;
  weightsManifest: ManifestGroupRead[];
}
type ManifestGroupRead = { paths: unknown[]; weights: unknown[] };

/** A manifest group's files, checked and located, with the byte count their entries describe. */
export interface WeightGroup {
  files: { listed: string; real: string; bytes: number }[];
  weights: WeightsManifestEntry[];
  bytes: number;
}

export interface TfjsModel {
  file: string;
  json: ModelJsonRead;
  topology: LayerJson;
  groups: WeightGroup[];
}

const BYTES: Record<string, number> = { float32: 4, int32: 4, bool: 1, complex64: 8, uint8: 1, uint16: 2, float16: 2 };

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
const isDim = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
const isGroup = (g: unknown): g is ManifestGroupRead =>
  isObject(g) && Array.isArray(g.paths) && Array.isArray(g.weights);
const oneOf = <T extends string>(list: readonly T[], v: unknown): v is T => list.some((x) => x === v);
const isOptionalNumber = (v: unknown): v is number | undefined => v === undefined || typeof v === 'number';
// The dtypes of a manifest entry that BYTES sizes, and those of a quantized entry's stored values.
const DTYPES = ['float32', 'int32', 'bool', 'complex64'] as const;
const QUANTIZED = ['uint8', 'uint16', 'float16'] as const;

function bad(
  file: string,
  what: string,
  hint = 'Export the model again (tfjs `model.save` or tensorflowjs_converter).',
): ModelError {
  return new ModelError(`${file}: ${what}`, { hint });
}

/**
 * One manifest entry, checked, with the bytes it takes in its file: quantized entries are stored in their
 * quantized type.
 */
function checkedEntry(file: string, entry: unknown): { entry: WeightsManifestEntry; bytes: number } {
  if (!isObject(entry) || typeof entry.name !== 'string') throw bad(file, 'a weights manifest entry has no name.');
  const { name, shape, dtype, quantization, group } = entry;
  if (!Array.isArray(shape) || !shape.every(isDim))
    throw bad(file, `weight ${name} has an invalid shape ${JSON.stringify(shape)}.`);
  const quantized = isObject(quantization) ? quantization : undefined;
  const stored = quantized ? quantized.dtype : dtype;
  const size = typeof stored === 'string' ? BYTES[stored] : undefined;
  if (size === undefined) throw bad(file, `weight ${name} has the unsupported dtype ${JSON.stringify(stored)}.`);
  if (!oneOf(DTYPES, dtype)) throw bad(file, `weight ${name} has the unsupported dtype ${JSON.stringify(dtype)}.`);
  const checked: WeightsManifestEntry = { name, shape, dtype };
  if (quantized) {
    const { scale, min } = quantized;
    if (!oneOf(QUANTIZED, quantized.dtype) || !isOptionalNumber(scale) || !isOptionalNumber(min))
      throw bad(file, `weight ${name} has an invalid quantization ${JSON.stringify(quantization)}.`);
    // tfjs tells a quantization's scale and min by their keys: only those present are written.
    checked.quantization = {
      dtype: quantized.dtype,
      ...(scale === undefined ? {} : { scale }),
      ...(min === undefined ? {} : { min }),
    };
  }
  if (group === 'model' || group === 'optimizer') checked.group = group;
  return { entry: checked, bytes: shape.reduce((a, b) => a * b, 1) * size };
}

/** Parses and checks model.json's structure (no weight file is touched). */
export async function readModelJson(file: string): Promise<{ json: ModelJsonRead; topology: LayerJson }> {
  let text: string;
  try {
    text = await fs.readFile(file, 'utf8');
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    throw new ModelError(
      `Cannot read the tfjs model ${file}: ${code === 'ENOENT' ? 'no such file' : (code ?? (error as Error).message)}.`,
      {
        cause: error,
        hint: 'backbone.weights should point to the model.json of a tfjs LayersModel, next to its weight files.',
      },
    );
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (error) {
    throw bad(
      file,
      `not valid JSON (${(error as Error).message}).`,
      'The file is truncated or not a tfjs model.json: export or download it again.',
    );
  }
  if (!isObject(json) || !isObject(json.modelTopology))
    throw bad(file, 'no modelTopology: this is not the model.json of a tfjs LayersModel.');
  let topology: LayerJson;
  try {
    topology = modelConfigOf(json.modelTopology);
    allLayerNames(topology);
  } catch (error) {
    throw bad(file, `its modelTopology is not a Keras model (${(error as Error).message}).`);
  }
  const manifest = json.weightsManifest ?? [];
  if (!Array.isArray(manifest) || !manifest.every(isGroup)) {
    throw bad(file, 'weightsManifest must be a list of {paths, weights} groups.');
  }
  return { json: { modelTopology: json.modelTopology, weightsManifest: manifest }, topology };
}

const inside = (dir: string, target: string) => {
  const rel = path.relative(dir, target);
  return rel !== '' && rel !== '..' && !rel.startsWith(`..${path.sep}`) && !path.isAbsolute(rel);
};

/** Where a listed weight path is, once it is known to be a regular file inside the model's folder. */
async function locate(file: string, listed: unknown): Promise<{ listed: string; real: string; bytes: number }> {
  const refuse = (why: string) =>
    new ModelError(
      `${file} lists the weight file ${JSON.stringify(listed)}, which ${why}; xp reads no file outside the model's folder.`,
      {
        hint: 'Weight paths in a model.json are file names relative to its folder, as tfjs writes them.',
      },
    );
  if (typeof listed !== 'string' || listed === '' || listed.includes('\0')) throw refuse('is not a file name');
  if (path.isAbsolute(listed) || /^[a-z][a-z0-9+.-]*:/i.test(listed)) throw refuse('is not relative to the model');
  const dir = path.dirname(file);
  const resolved = path.resolve(dir, listed);
  if (!inside(dir, resolved)) throw refuse('is outside its folder');
  let real: string;
  try {
    real = await fs.realpath(resolved);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    throw new ModelError(
      `${file} lists the weight file ${JSON.stringify(listed)}, which ${code === 'ENOENT' ? 'does not exist' : `cannot be read (${code})`}.`,
      {
        cause: error,
        hint: 'Copy the model folder whole: model.json and every weight file next to it.',
      },
    );
  }
  if (!inside(await fs.realpath(dir), real)) throw refuse(`is a link to ${real}, outside its folder`);
  const stat = await fs.stat(real);
  if (!stat.isFile()) throw refuse('is not a regular file');
  return { listed, real, bytes: stat.size };
}

/** Checks every weight file of the manifest (place, kind, total size per group) without reading any. */
export async function locateWeights(file: string, json: ModelJsonRead): Promise<WeightGroup[]> {
  const groups: WeightGroup[] = [];
  for (const read of json.weightsManifest) {
    const entries = read.weights.map((entry) => checkedEntry(file, entry));
    const group = { paths: read.paths, weights: entries.map((e) => e.entry) };
    const bytes = entries.reduce((sum, e) => sum + e.bytes, 0);
    const files = [];
    for (const listed of group.paths) files.push(await locate(file, listed));
    const found = files.reduce((sum, f) => sum + f.bytes, 0);
    if (files.length === 0 && bytes > 0)
      throw bad(
        file,
        `a weightsManifest group lists weights (${group.weights[0].name}, ...) but no file holding them.`,
      );
    if (found !== bytes) {
      const names = files.map((f) => f.listed).join(', ');
      throw new ModelError(
        `${file}: the weight file${files.length > 1 ? 's' : ''} ${names} ha${files.length > 1 ? 've' : 's'} ${found.toLocaleString('en-US')} bytes, ` +
          `the manifest's weights (${group.weights
            .map((w) => w.name)
            .slice(0, 3)
            .join(', ')}${group.weights.length > 3 ? ', ...' : ''}) need ${bytes.toLocaleString('en-US')}.`,
        {
          hint:
            found < bytes
              ? 'A weight file is truncated: copy or download the model again.'
              : 'The weight files do not belong to this model.json: copy or export the model again.',
        },
      );
    }
    groups.push({ files, weights: group.weights, bytes });
  }
  return groups;
}

/** model.json parsed and its weight files checked; nothing else read. */
export async function inspectTfjsModel(file: string): Promise<TfjsModel> {
  const { json, topology } = await readModelJson(file);
  return { file, json, topology, groups: await locateWeights(file, json) };
}

/** The bytes of a checked group's files, one buffer per file, each exactly the size checked. */
export async function readWeightGroup(model: TfjsModel, group: WeightGroup): Promise<ArrayBuffer[]> {
  return Promise.all(
    group.files.map(async ({ listed, real, bytes }) => {
      const buffer = new ArrayBuffer(bytes);
      // Opened again as it was checked: no link followed, no wait on a pipe swapped in since, a regular file.
      const handle = await fs.open(real, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
      try {
        if (!(await handle.stat()).isFile())
          throw new ModelError(`${model.file}: the weight file ${listed} is no longer a regular file.`);
        const view = new Uint8Array(buffer);
        for (let at = 0; at < bytes; ) {
          const { bytesRead } = await handle.read(view, at, bytes - at, at);
          if (bytesRead === 0)
            throw new ModelError(`${model.file}: the weight file ${listed} became shorter while it was read.`);
          at += bytesRead;
        }
      } finally {
        await handle.close();
      }
      return buffer;
    }),
  );
}
