// The nsfwjs package ships complete Keras 2.2.4 InceptionV3 and MobileNetV2 LayersModels as
// browserify bundles (CommonJS): model.min.js exports the model.json object, each
// group1-shardNofM.min.js exports one weight shard as a base64 string (uint8-quantized weights).
import { createRequire } from 'node:module';
import path from 'node:path';
import type { BackboneName } from '../config/types.ts';
import { ModelError } from '../errors.ts';
import type { TfjsModelJson, WeightsManifestEntry } from './tfjs-model.ts';

const require = createRequire(import.meta.url);

function bundleDir(name: BackboneName): string {
  try {
    // main is dist/cjs/index.js; the bundles sit in dist/models/<name>/
    return path.join(path.dirname(require.resolve('nsfwjs')), '..', 'models', name);
  } catch (error) {
    throw new ModelError('The nsfwjs package is not installed, so its bundled backbone weights are unavailable.', {
      cause: error,
      hint: 'Run `npm install` in the xp folder, or use `weights: imagenet`.',
    });
  }
}

// Loads a bundle module without keeping its (large) string in the require cache.
function requireOnce<T>(file: string): T {
  const resolved = require.resolve(file);
  try {
    return require(resolved) as T;
  } finally {
    delete require.cache[resolved];
  }
}

/** The model.json of a bundled nsfwjs model (topology and weight manifest, no weight data). */
export function nsfwjsModelJson(name: BackboneName): TfjsModelJson {
  return requireOnce<TfjsModelJson>(path.join(bundleDir(name), 'model.min.js'));
}

/** The weight shards of a bundled nsfwjs model as buffers, per manifest group (uint8-quantized; tf.io.decodeWeights dequantizes). */
export function nsfwjsWeightShards(
  name: BackboneName,
  json = nsfwjsModelJson(name),
): { buffers: ArrayBuffer[]; weights: WeightsManifestEntry[] }[] {
  const dir = bundleDir(name);
  return json.weightsManifest.map((group) => ({
    weights: group.weights,
    buffers: group.paths.map((shard) => {
      const base64 = requireOnce<string>(path.join(dir, `${shard}.min.js`));
      const bytes = Buffer.from(base64, 'base64');
      return bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength);
    }),
  }));
}
