// Keras HDF5 weight files, read and written with h5wasm.
// Legacy layout (Keras 2, `model.save_weights('x.h5')`, the keras-applications files): root attr
// `layer_names`; one group per layer with attr `weight_names` (`conv2d_1/kernel:0`, ...), each
// name a dataset path inside that group. A full-model save nests the same under `model_weights`.
// Keras 3 layout (`x.weights.h5`): `layers/<name>/vars/<0..n>`, in the layer's weight order.
import fs from 'node:fs/promises';
import h5wasm from 'h5wasm/node';
import { ModelError } from '../errors.ts';

export interface H5Weight {
  name: string; // short Keras name: kernel, bias, gamma, beta, moving_mean, moving_variance, depthwise_kernel
  shape: number[];
  values: Float32Array;
}

/** Weights per layer name, each list in the layer's Keras weight order; layers without weights left out. */
export type H5Weights = Map<string, H5Weight[]>;

type Group = InstanceType<typeof h5wasm.Group>;
type Dataset = InstanceType<typeof h5wasm.Dataset>;

const shortName = (weightName: string) => weightName.split('/').pop()!.replace(/:\d+$/, '');

function readDataset(dataset: Dataset, name: string): H5Weight {
  const value = dataset.value as ArrayLike<number>;
  const values = value instanceof Float32Array ? value : Float32Array.from(value);
  return { name, shape: dataset.shape ?? [], values };
}

function stringList(value: unknown): string[] {
  if (value == null) return [];
  return (Array.isArray(value) ? value : [value]).map(String);
}

function readLegacy(root: Group): H5Weights {
  const weights: H5Weights = new Map();
  for (const layer of stringList(root.get_attribute('layer_names', true))) {
    const group = root.get(layer) as Group | null;
    if (!group) continue;
    const names = stringList(group.attrs['weight_names'] ? group.get_attribute('weight_names', true) : []);
    if (names.length === 0) continue;
    weights.set(
      layer,
      names.map((n) => {
        const dataset = group.get(n) as Dataset | null;
        if (!dataset) throw new Error(`missing dataset ${layer}/${n}`);
        return readDataset(dataset, shortName(n));
      }),
    );
  }
  return weights;
}

function readKeras3(layersGroup: Group): H5Weights {
  const weights: H5Weights = new Map();
  for (const layer of layersGroup.keys()) {
    const vars = layersGroup.get(`${layer}/vars`) as Group | null;
    if (!vars) continue;
    const keys = vars.keys().sort((a, b) => Number(a) - Number(b));
    if (keys.length === 0) continue;
    weights.set(layer, keys.map((k) => readDataset(vars.get(k) as Dataset, k)));
  }
  return weights;
}

const HDF5_SIGNATURE = Buffer.from([0x89, 0x48, 0x44, 0x46, 0x0d, 0x0a, 0x1a, 0x0a]);

/** Whether the file starts with the HDF5 signature (checked before h5wasm, which prints C errors). */
export async function isHdf5(file: string): Promise<boolean> {
  const handle = await fs.open(file, 'r');
  try {
    const head = Buffer.alloc(HDF5_SIGNATURE.length);
    await handle.read(head, 0, head.length, 0);
    return head.equals(HDF5_SIGNATURE);
  } finally {
    await handle.close();
  }
}

/** Reads all layer weights of a Keras .h5 file (legacy or Keras 3 layout). */
export async function readKerasH5(file: string): Promise<H5Weights> {
  if (!(await isHdf5(file))) {
    throw new ModelError(`${file} is not an HDF5 file.`, { hint: 'Give a Keras weights file saved with model.save_weights(...h5).' });
  }
  await h5wasm.ready;
  const f = new h5wasm.File(file, 'r');
  try {
    if (f.attrs['layer_names']) return readLegacy(f);
    const nested = f.get('model_weights') as Group | null;
    if (nested?.attrs['layer_names']) return readLegacy(nested);
    const layers = f.get('layers') as Group | null;
    if (layers) return readKeras3(layers);
    throw new ModelError(`${file} is an HDF5 file but not a Keras weights file (no layer_names attribute, no layers group).`, {
      hint: 'Save the weights from Keras with model.save_weights(path) or model.save(path) in .h5 format.',
    });
  } catch (error) {
    if (error instanceof ModelError) throw error;
    throw new ModelError(`Cannot read Keras weights from ${file}: ${(error as Error).message}`, { cause: error });
  } finally {
    f.close();
  }
}

/** Writes weights in the legacy Keras layout, as `model.save_weights('x.h5')` in Keras 2 does. */
export async function writeKerasH5(file: string, weights: H5Weights): Promise<void> {
  await h5wasm.ready;
  const f = new h5wasm.File(file, 'w');
  try {
    f.create_attribute('layer_names', [...weights.keys()]);
    f.create_attribute('backend', 'tensorflow');
    f.create_attribute('keras_version', '2.2.4');
    for (const [layer, list] of weights) {
      const group = f.create_group(layer);
      group.create_attribute('weight_names', list.map((w) => `${layer}/${w.name}:0`));
      const inner = group.create_group(layer);
      for (const w of list) inner.create_dataset({ name: `${w.name}:0`, data: w.values, shape: w.shape, dtype: '<f' });
    }
  } finally {
    f.close();
  }
}
