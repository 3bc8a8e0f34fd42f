// Keras HDF5 weight files, read and written with h5wasm.
// Legacy layout (Keras 2, `model.save_weights('x.h5')`, the keras-applications files): root attr
// `layer_names`; one group per layer with attr `weight_names` (`conv2d_1/kernel:0`, ...), each
// name a dataset path inside that group. A full-model save nests the same under `model_weights`.
// Keras 3 layout (`x.weights.h5`): `layers/<name>/vars/<0..n>`, in the layer's weight order.
import fs from 'node:fs/promises';
import h5wasm from 'h5wasm/node';
import { ModelError } from '../errors.ts';

export interface H5WeightShape {
  name: string; // short Keras name: kernel, bias, gamma, beta, moving_mean, moving_variance, depthwise_kernel
  shape: number[];
}

export interface H5Weight extends H5WeightShape {
  values: Float32Array;
}

/** Weights per layer name, each list in the layer's Keras weight order; layers without weights left out. */
export type H5Weights = Map<string, H5Weight[]>;
/** The same without the values: what `xp check` compares with an architecture. */
export type H5Shapes = Map<string, H5WeightShape[]>;

type Group = InstanceType<typeof h5wasm.Group>;
type Dataset = InstanceType<typeof h5wasm.Dataset>;
type ReadDataset<T> = (dataset: Dataset, name: string) => T;

const shortName = (weightName: string) => weightName.slice(weightName.lastIndexOf('/') + 1).replace(/:\d+$/, '');

const valuesOf: ReadDataset<H5Weight> = (dataset, name) => {
  const value = dataset.value as ArrayLike<number>;
  const values = value instanceof Float32Array ? value : Float32Array.from(value);
  return { name, shape: dataset.shape ?? [], values };
};

const shapeOf: ReadDataset<H5WeightShape> = (dataset, name) => ({ name, shape: dataset.shape ?? [] });

function stringList(value: unknown): string[] {
  if (value == null) return [];
  return (Array.isArray(value) ? value : [value]).map(String);
}

function isDataset(node: unknown): node is Dataset {
  return node instanceof h5wasm.Dataset;
}

function readLegacy<T>(root: Group, read: ReadDataset<T>): Map<string, T[]> {
  const weights = new Map<string, T[]>();
  for (const layer of stringList(root.get_attribute('layer_names', true))) {
    const group = root.get(layer) as Group | null;
    if (!group) continue;
    const names = stringList(group.attrs.weight_names ? group.get_attribute('weight_names', true) : []);
    if (names.length === 0) continue;
    weights.set(
      layer,
      names.map((n) => {
        const dataset = group.get(n);
        if (!isDataset(dataset)) throw new Error(`layer ${layer} lists weight ${n}, which is missing`);
        return read(dataset, shortName(n));
      }),
    );
  }
  return weights;
}

function readKeras3<T>(layersGroup: Group, read: ReadDataset<T>): Map<string, T[]> {
  const weights = new Map<string, T[]>();
  for (const layer of layersGroup.keys()) {
    const vars = layersGroup.get(`${layer}/vars`) as Group | null;
    if (!vars) continue;
    const keys = vars.keys().sort((a, b) => Number(a) - Number(b));
    if (keys.length === 0) continue;
    weights.set(
      layer,
      keys.map((k) => {
        const dataset = vars.get(k);
        if (!isDataset(dataset)) throw new Error(`layers/${layer}/vars/${k} is not a dataset`);
        return read(dataset, k);
      }),
    );
  }
  return weights;
}

const HDF5_SIGNATURE = Buffer.from([0x89, 0x48, 0x44, 0x46, 0x0d, 0x0a, 0x1a, 0x0a]);

/** Whether the file starts with the HDF5 signature. */
async function isHdf5(file: string): Promise<boolean> {
  const handle = await fs.open(file, 'r');
  try {
    const head = Buffer.alloc(HDF5_SIGNATURE.length);
    await handle.read(head, 0, head.length, 0);
    return head.equals(HDF5_SIGNATURE);
  } finally {
    await handle.close();
  }
}

// HDF5 prints its error stack to stderr by default (dozens of lines per failure); h5wasm can turn
// each failure into a thrown Error carrying that stack instead, which `reason` shortens to one line.
let throwing: Promise<void> | undefined;
function hdf5Ready(): Promise<void> {
  throwing ??= h5wasm.ready.then((module) => {
    module.activate_throwing_error_handler();
  });
  return throwing;
}

/** The innermost cause in an HDF5 error stack ("truncated file: eof = ..."), or the message itself. */
function reason(error: unknown): string {
  const text = String((error as Error)?.message ?? error);
  const causes = [...text.matchAll(/^\s*#\d+: .* in \w+\(\): (.*)$/gm)].map((m) => m[1].trim());
  const truncated = /truncated file: eof = (\d+),.*stored_eof = (\d+)/.exec(text);
  if (truncated)
    return `it is truncated (${Number(truncated[1]).toLocaleString('en-US')} of ${Number(truncated[2]).toLocaleString('en-US')} bytes)`;
  const innermost = causes.at(-1);
  if (innermost !== undefined) return innermost;
  // A structure corrupt enough to send the reader out of its memory aborts h5wasm's WebAssembly module.
  if (error instanceof WebAssembly.RuntimeError)
    return `its structure is corrupt (${text.replace(/^Aborted\((.*)\)$/, '$1')})`;
  return text.trim().split('\n')[0];
}

// h5wasm's WebAssembly runtime prints "Aborted(...)" before it throws; the ModelError says it instead.
// Its calls are synchronous, so what they print is held back for exactly their duration, and let
// through when they succeed.
function quietly<T>(run: () => T): T {
  const write = process.stderr.write;
  const held: unknown[][] = [];
  process.stderr.write = ((...args: unknown[]) => {
    held.push(args);
    return true;
  }) as typeof process.stderr.write;
  let ok = false;
  try {
    const result = run();
    ok = true;
    return result;
  } finally {
    process.stderr.write = write;
    if (ok) for (const args of held) (write as (...a: unknown[]) => boolean).apply(process.stderr, args);
  }
}

function unreadable(file: string, error: unknown): ModelError {
  return new ModelError(`${file} is not a readable Keras weights file: ${reason(error)}.`, {
    cause: error,
    hint: 'The file is truncated or corrupt: download (or export) it again.',
  });
}

async function readH5<T>(file: string, read: ReadDataset<T>): Promise<Map<string, T[]>> {
  const stat = await fs.stat(file).catch(() => undefined);
  if (!stat) {
    throw new ModelError(`no such file ${file}`, {
      hint: "backbone.weights should name a Keras .h5 weights file (relative paths are resolved from the experiment file's folder), or be nsfwjs or imagenet.",
    });
  }
  if (!stat.isFile())
    throw new ModelError(`${file} is not a regular file.`, {
      hint: 'Give a Keras weights file saved with model.save_weights(...h5).',
    });
  if (!(await isHdf5(file))) {
    throw new ModelError(`${file} is not an HDF5 file.`, {
      hint: 'Give a Keras weights file saved with model.save_weights(...h5).',
    });
  }
  await hdf5Ready();
  return quietly(() => readOpened(file, read));
}

function readOpened<T>(file: string, read: ReadDataset<T>): Map<string, T[]> {
  let f: InstanceType<typeof h5wasm.File>;
  try {
    f = new h5wasm.File(file, 'r');
  } catch (error) {
    throw unreadable(file, error);
  }
  try {
    if (f.attrs.layer_names) return readLegacy(f, read);
    const nested = f.get('model_weights') as Group | null;
    if (nested?.attrs.layer_names) return readLegacy(nested, read);
    const layers = f.get('layers') as Group | null;
    if (layers) return readKeras3(layers, read);
    throw new ModelError(
      `${file} is an HDF5 file but not a Keras weights file (no layer_names attribute, no layers group).`,
      {
        hint: 'Save the weights from Keras with model.save_weights(path) or model.save(path) in .h5 format.',
      },
    );
  } catch (error) {
    if (error instanceof ModelError) throw error;
    throw unreadable(file, error);
  } finally {
    try {
      f.close();
    } catch {
      // a file HDF5 could not read may not close either; nothing is left to release
    }
  }
}

/** Reads all layer weights of a Keras .h5 file (legacy or Keras 3 layout). */
export function readKerasH5(file: string): Promise<H5Weights> {
  return readH5(file, valuesOf);
}

/** The layer names and weight shapes of a Keras .h5 file, without reading the values. */
export function readKerasH5Shapes(file: string): Promise<H5Shapes> {
  return readH5(file, shapeOf);
}

/** Writes weights in the legacy Keras layout, as `model.save_weights('x.h5')` in Keras 2 does. */
export async function writeKerasH5(file: string, weights: H5Weights): Promise<void> {
  await hdf5Ready();
  const f = new h5wasm.File(file, 'w');
  try {
    f.create_attribute('layer_names', [...weights.keys()]);
    f.create_attribute('backend', 'tensorflow');
    f.create_attribute('keras_version', '2.2.4');
    for (const [layer, list] of weights) {
      const group = f.create_group(layer);
      group.create_attribute(
        'weight_names',
        list.map((w) => `${layer}/${w.name}:0`),
      );
      const inner = group.create_group(layer);
      for (const w of list) inner.create_dataset({ name: `${w.name}:0`, data: w.values, shape: w.shape, dtype: '<f' });
    }
  } finally {
    f.close();
  }
}
