// Keras .h5 weights: the test cannot download the real files, so it writes a legacy-format .h5
// from the nsfwjs MobileNetV2 weights and serves it from a local HTTP server.
import { createHash } from 'node:crypto';
import fs from 'node:fs/promises';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs-node';
import h5wasm from 'h5wasm/node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { BackboneConfig } from '../../src/config/types.ts';
import { ModelError } from '../../src/errors.ts';
import { loadBackbone, type Backbone } from '../../src/model/backbone.ts';
import { readKerasH5, writeKerasH5 } from '../../src/model/h5.ts';
import { kerasWeightsFile } from '../../src/model/keras-weights.ts';
import { assignH5Weights, layerWeights } from '../../src/model/weights.ts';

const FILE = 'mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5';
const imagenet: BackboneConfig = {
  name: 'mobilenet_v2',
  weights: 'imagenet',
  cut_layer: 'out_relu',
  trainable: false,
  preprocessing: 'auto',
};

let tmp: string;
let source: Backbone;
let md5: string;
let server: http.Server;
let baseUrl: string;
const requests: string[] = [];

beforeAll(async () => {
  tmp = await fs.mkdtemp(path.join(os.tmpdir(), 'xp-keras-weights-'));
  source = await loadBackbone({ ...imagenet, weights: 'nsfwjs' }, [224, 224]);
  await fs.mkdir(path.join(tmp, 'www', 'mobilenet_v2'), { recursive: true });
  const file = path.join(tmp, 'www', 'mobilenet_v2', FILE);
  await writeKerasH5(file, layerWeights(source.model));
  md5 = createHash('md5')
    .update(await fs.readFile(file))
    .digest('hex');
  server = http.createServer(async (req, res) => {
    requests.push(req.url ?? '');
    const body = await fs.readFile(path.join(tmp, 'www', decodeURIComponent(req.url ?? ''))).catch(() => undefined);
    res.writeHead(body ? 200 : 404).end(body);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  baseUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}/`;
});

afterAll(async () => {
  await new Promise((resolve) => server.close(resolve));
  await fs.rm(tmp, { recursive: true, force: true });
});

const dirs = async (name: string) => {
  const cacheDir = path.join(tmp, name, 'cache');
  const kerasDir = path.join(tmp, name, 'keras');
  await fs.mkdir(kerasDir, { recursive: true });
  return { cacheDir, kerasDir };
};

function maxDifference(a: tf.LayersModel, b: tf.LayersModel, size: number): number {
  return tf.tidy(() => {
    const x = tf.randomUniform([2, size, size, 3], -1, 1, 'float32', 7);
    return tf.max(tf.abs(tf.sub(a.predict(x) as tf.Tensor, b.predict(x) as tf.Tensor))).dataSync()[0];
  });
}

describe('imagenet weights', () => {
  it('downloads the file once, verifies its md5, caches it, and loads the same weights', async () => {
    const { cacheDir, kerasDir } = await dirs('download');
    const before = requests.length;
    const loaded = await loadBackbone(imagenet, [224, 224], { cacheDir, kerasDir, weightsBaseUrl: baseUrl, md5 });
    expect(requests.slice(before)).toEqual([`/mobilenet_v2/${FILE}`]);
    expect(await fs.readdir(cacheDir)).toEqual([FILE]); // renamed into place, no temp file left
    expect(loaded.preprocessing).toBe('inception');
    expect(maxDifference(loaded.model, source.model, 224)).toBe(0);
    const again = await loadBackbone(imagenet, [224, 224], { cacheDir, kerasDir, weightsBaseUrl: baseUrl, md5 });
    expect(requests.length).toBe(before + 1);
    loaded.model.dispose();
    again.model.dispose();
  });

  it('uses the file Keras already downloaded to ~/.keras/models without any request', async () => {
    const { cacheDir, kerasDir } = await dirs('keras-dir');
    await fs.copyFile(path.join(tmp, 'www', 'mobilenet_v2', FILE), path.join(kerasDir, FILE));
    const before = requests.length;
    const loaded = await loadBackbone({ ...imagenet, cut_layer: 'block_6_expand_relu' }, [160, 224], {
      cacheDir,
      kerasDir,
      weightsBaseUrl: baseUrl,
      md5,
    });
    expect(requests.length).toBe(before);
    expect(loaded.featureShape).toEqual([20, 28, 192]);
    loaded.model.dispose();
  });

  it('reads the base URL from XP_KERAS_WEIGHTS_URL', async () => {
    const { cacheDir, kerasDir } = await dirs('env');
    process.env.XP_KERAS_WEIGHTS_URL = baseUrl;
    try {
      const before = requests.length;
      const loaded = await loadBackbone(imagenet, [96, 128], { cacheDir, kerasDir, md5 });
      expect(requests.length).toBe(before + 1);
      loaded.model.dispose();
    } finally {
      delete process.env.XP_KERAS_WEIGHTS_URL;
    }
  });

  it('replaces a corrupt file in its cache by a fresh download', async () => {
    const { cacheDir, kerasDir } = await dirs('corrupt-cache');
    await fs.mkdir(cacheDir, { recursive: true });
    await fs.writeFile(path.join(cacheDir, FILE), 'truncated');
    const before = requests.length;
    const loaded = await loadBackbone(imagenet, [224, 224], { cacheDir, kerasDir, weightsBaseUrl: baseUrl, md5 });
    expect(requests.length).toBe(before + 1);
    expect((await fs.stat(path.join(cacheDir, FILE))).size).toBeGreaterThan(1_000_000);
    loaded.model.dispose();
  });

  it('passes over a truncated MobileNetV2 file in ~/.keras/models (Keras publishes no md5 for it) and downloads a whole one', async () => {
    const { cacheDir, kerasDir } = await dirs('truncated-keras-dir');
    const whole = await fs.readFile(path.join(tmp, 'www', 'mobilenet_v2', FILE));
    await fs.writeFile(path.join(kerasDir, FILE), whole.subarray(0, whole.length / 2));
    const before = requests.length;
    const loaded = await loadBackbone(imagenet, [224, 224], { cacheDir, kerasDir, weightsBaseUrl: baseUrl });
    expect(requests.length).toBe(before + 1);
    expect(maxDifference(loaded.model, source.model, 224)).toBe(0);
    loaded.model.dispose();
  });

  it('rejects a download with the wrong checksum and keeps nothing', async () => {
    const { cacheDir, kerasDir } = await dirs('bad-md5');
    const error = await loadBackbone(imagenet, [224, 224], {
      cacheDir,
      kerasDir,
      weightsBaseUrl: baseUrl,
      md5: '0'.repeat(32),
    }).catch((e) => e);
    expect(error).toBeInstanceOf(ModelError);
    expect(error.message).toMatch(/corrupt \(md5 [0-9a-f]{32}, expected 0{32}\)/);
    expect(await fs.readdir(cacheDir)).toEqual([]);
  });

  it('explains a failed download and where to put the file by hand', async () => {
    const { cacheDir, kerasDir } = await dirs('missing');
    const error = await loadBackbone(imagenet, [224, 224], {
      cacheDir,
      kerasDir,
      weightsBaseUrl: `${baseUrl}nowhere/`,
      md5,
    }).catch((e) => e);
    expect(error).toBeInstanceOf(ModelError);
    expect(error.message).toMatch(/HTTP 404/);
    expect(error.hint).toContain(path.join(cacheDir, FILE));
  });

  it('explains an unreachable server', async () => {
    const { cacheDir, kerasDir } = await dirs('unreachable');
    const closed = http.createServer();
    await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve));
    const port = (closed.address() as AddressInfo).port;
    await new Promise((resolve) => closed.close(resolve));
    const error = await loadBackbone(imagenet, [224, 224], {
      cacheDir,
      kerasDir,
      weightsBaseUrl: `http://127.0.0.1:${port}/`,
      md5,
    }).catch((e) => e);
    expect(error).toBeInstanceOf(ModelError);
    expect(error.message).toMatch(/Could not download .*ECONNREFUSED/);
  });

  it('picks the file Keras would: per-size MobileNetV2 weights for square trained sizes, else 224', () => {
    expect(kerasWeightsFile('mobilenet_v2', [160, 160]).file).toBe(
      'mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_160_no_top.h5',
    );
    expect(kerasWeightsFile('mobilenet_v2', [150, 150]).file).toBe(FILE);
    expect(kerasWeightsFile('inception_v3', [150, 150])).toEqual({
      file: 'inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5',
      urlPath: 'inception_v3/inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5',
      md5: 'bcbd6486424b2319ff4ef7d526e38f63',
    });
  });
});

describe('a .h5 path as weights', () => {
  it('applies the file to the named architecture', async () => {
    const loaded = await loadBackbone(
      { ...imagenet, weights: path.join(tmp, 'www', 'mobilenet_v2', FILE) },
      [224, 224],
    );
    expect(maxDifference(loaded.model, source.model, 224)).toBe(0);
    loaded.model.dispose();
  });

  it('reports a file of another architecture', async () => {
    const file = path.join(tmp, 'www', 'mobilenet_v2', FILE);
    const error = await loadBackbone(
      { name: 'inception_v3', weights: file, cut_layer: 'mixed0', trainable: false, preprocessing: 'auto' },
      [150, 150],
    ).catch((e) => e);
    expect(error).toBeInstanceOf(ModelError);
    expect(error.message).toMatch(/has no weights for \d+ layers of the model: conv2d_1, /);
  });

  it('reports a missing file', async () => {
    await expect(loadBackbone({ ...imagenet, weights: path.join(tmp, 'nope.h5') }, [224, 224])).rejects.toThrow(
      /no such file/,
    );
  });
});

describe('h5 layer matching', () => {
  const tiny = () =>
    tf.sequential({
      layers: [
        tf.layers.conv2d({ name: 'conv2d_1', filters: 2, kernelSize: 1, inputShape: [4, 4, 1] }),
        tf.layers.conv2d({ name: 'conv2d_2', filters: 2, kernelSize: 1 }),
      ],
    });
  const weight = (name: string, shape: number[], value: number) => ({
    name,
    shape,
    values: new Float32Array(shape.reduce((a, b) => a * b, 1)).fill(value),
  });

  it('pairs Keras 3 names (conv2d, conv2d_1) with Keras 2 names (conv2d_1, conv2d_2) in creation order', () => {
    const model = tiny();
    const file = new Map([
      ['conv2d', [weight('kernel', [1, 1, 1, 2], 1), weight('bias', [2], 0)]],
      ['conv2d_1', [weight('kernel', [1, 1, 2, 2], 2), weight('bias', [2], 0)]],
    ]);
    assignH5Weights(model, file, 'test.h5');
    expect(model.getLayer('conv2d_1').getWeights()[0].dataSync()[0]).toBe(1);
    expect(model.getLayer('conv2d_2').getWeights()[0].dataSync()[0]).toBe(2);
    model.dispose();
  });

  it('reads the Keras 3 .weights.h5 layout', async () => {
    await h5wasm.ready;
    const file = path.join(tmp, 'k3.weights.h5');
    const f = new h5wasm.File(file, 'w');
    const vars = f.create_group('layers').create_group('dense').create_group('vars');
    vars.create_dataset({ name: '0', data: new Float32Array([1, 2, 3, 4, 5, 6]), shape: [3, 2] });
    vars.create_dataset({ name: '1', data: new Float32Array([7, 8]), shape: [2] });
    f.close();
    const weights = await readKerasH5(file);
    expect([...weights.keys()]).toEqual(['dense']);
    expect(weights.get('dense')!.map((w) => w.shape)).toEqual([[3, 2], [2]]);
    expect(Array.from(weights.get('dense')![1].values)).toEqual([7, 8]);
  });

  it('rejects a file that is not HDF5', async () => {
    const file = path.join(tmp, 'not.h5');
    await fs.writeFile(file, 'hello');
    await expect(readKerasH5(file)).rejects.toThrow(ModelError);
  });
});
