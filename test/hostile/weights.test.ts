// Hostile and damaged weights files and run folders: a model.json naming files outside its folder, special
// files, truncated or mismatched shards, truncated, corrupt and wrong-architecture .h5 files, damaged saved
// runs. Each is one clear ModelError naming the file (one line from the CLI, no stack trace, no HDF5 noise),
// found before any image is decoded, and nothing outside the model's folder is ever read.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs-node';
import { execa } from 'execa';
import h5wasm from 'h5wasm/node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { BackboneConfig } from '../../src/config/types.ts';
import { ModelError } from '../../src/errors.ts';
import { inspectBackboneWeights, loadBackbone } from '../../src/model/backbone.ts';
import { readKerasH5, writeKerasH5 } from '../../src/model/h5.ts';
import { readSavedModel, writeSavedModel } from '../../src/model/saved-run.ts';
import { layerWeights } from '../../src/model/weights.ts';

const root = path.resolve(import.meta.dirname, '../..');
const shared = path.resolve(root, '../shared');
const teachable = path.join(shared, 'models/teachable-machine-mobilenet-v2');
const dataset = path.join(shared, 'datasets/cats_and_dogs_filtered');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'xp-hostile-weights-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

const xp = (args: string[]) =>
  execa(process.execPath, [path.join(root, 'bin', 'xp.js'), ...args], {
    reject: false,
    cwd: tmp,
    env: { XP_RUNS_DIR: path.join(tmp, 'runs') },
  });

/** What a user must see: one `xp <command>: ...` error (and its hint), no stack trace, no HDF5 diagnostics. */
function expectOneCleanError(r: { exitCode?: number; stderr: string }, pattern: RegExp) {
  expect(r.exitCode, r.stderr).not.toBe(0);
  expect(r.stderr).toMatch(pattern);
  expect(r.stderr).not.toMatch(/\n\s+at |HDF5-DIAG|name not defined|Aborted\(/);
  // TensorFlow's own start-up lines are another matter (issue #11); the error and its hint are two lines.
  const lines = r.stderr
    .trim()
    .split('\n')
    .filter((l) => !/^(WARNING: All log messages before absl|[IW]\d{4} )/.test(l));
  expect(lines.length, r.stderr).toBeLessThanOrEqual(2);
}

// A copy of the Teachable Machine model in its own folder, its manifest edited by `edit`.
let copies = 0;
function modelCopy(edit: (json: any, dir: string) => void = () => {}): string {
  const dir = path.join(tmp, `model-${++copies}`, 'model');
  fs.mkdirSync(dir, { recursive: true });
  fs.copyFileSync(path.join(teachable, 'weights.bin'), path.join(dir, 'weights.bin'));
  const json = JSON.parse(fs.readFileSync(path.join(teachable, 'model.json'), 'utf8'));
  edit(json, dir);
  fs.writeFileSync(path.join(dir, 'model.json'), JSON.stringify(json));
  return path.join(dir, 'model.json');
}

const tfjsBackbone = (file: string): BackboneConfig => ({
  name: 'mobilenet_v2',
  weights: file,
  cut_layer: 'out_relu',
  trainable: false,
  preprocessing: 'auto',
});
const refusal = (file: string) =>
  loadBackbone(tfjsBackbone(file), [96, 96]).then(
    () => undefined,
    (error) => error,
  );

describe('a model.json reads no file outside its folder', () => {
  it('refuses a weight path that climbs out of the folder, though the file there has the right bytes', async () => {
    const file = modelCopy((json, dir) => {
      fs.renameSync(path.join(dir, 'weights.bin'), path.join(dir, '..', 'weights.bin'));
      json.weightsManifest[0].paths = ['../weights.bin'];
    });
    const error = await refusal(file);
    expect(error).toBeInstanceOf(ModelError);
    expect(error.message).toContain(file);
    expect(error.message).toMatch(/"\.\.\/weights\.bin", which is outside its folder/);
  });

  it('refuses an absolute weight path', async () => {
    const outside = path.join(tmp, 'outside.bin');
    fs.copyFileSync(path.join(teachable, 'weights.bin'), outside);
    const error = await refusal(modelCopy((json) => (json.weightsManifest[0].paths = [outside])));
    expect(error).toBeInstanceOf(ModelError);
    expect(error.message).toMatch(/which is not relative to the model/);
  });

  it('refuses a weight file that is a link to a file outside the folder', async () => {
    const file = modelCopy((_json, dir) => {
      fs.renameSync(path.join(dir, 'weights.bin'), path.join(dir, '..', 'elsewhere.bin'));
      fs.symlinkSync(path.join(dir, '..', 'elsewhere.bin'), path.join(dir, 'weights.bin'));
    });
    const error = await refusal(file);
    expect(error).toBeInstanceOf(ModelError);
    expect(error.message).toMatch(/"weights\.bin", which is a link to .*elsewhere\.bin, outside its folder/);
  });

  it('refuses a link to /dev/zero at once instead of reading it forever', async () => {
    const file = modelCopy((_json, dir) => {
      fs.rmSync(path.join(dir, 'weights.bin'));
      fs.symlinkSync('/dev/zero', path.join(dir, 'weights.bin'));
    });
    const error = await refusal(file);
    expect(error).toBeInstanceOf(ModelError);
    expect(error.message).toMatch(/a link to \/dev\/zero, outside its folder/);
  });

  it('refuses a named pipe inside the folder instead of waiting for a writer', async () => {
    const file = modelCopy((_json, dir) => {
      fs.rmSync(path.join(dir, 'weights.bin'));
      execFileSync('mkfifo', [path.join(dir, 'weights.bin')]);
    });
    const error = await refusal(file);
    expect(error).toBeInstanceOf(ModelError);
    expect(error.message).toMatch(/"weights\.bin", which is not a regular file/);
  });
});

describe('a model.json manifest that is not what tfjs writes is refused before any file is read', () => {
  const cases: [string, (json: any) => void, RegExp][] = [
    [
      'a URL as weight path',
      (json) => (json.weightsManifest[0].paths = ['http://127.0.0.1:1/weights.bin']),
      /"http:\/\/127\.0\.0\.1:1\/weights\.bin", which is not relative to the model/,
    ],
    [
      'a number as weight path',
      (json) => (json.weightsManifest[0].paths = [42]),
      /the weight file 42, which is not a file name/,
    ],
    [
      'a string weight',
      (json) => (json.weightsManifest[0].weights[0].dtype = 'string'),
      /has the unsupported dtype "string"/,
    ],
    [
      'weights without a file',
      (json) => (json.weightsManifest[0].paths = []),
      /lists weights \(.*\) but no file holding them/,
    ],
    [
      'a negative dimension',
      (json) => (json.weightsManifest[0].weights[0].shape = [-1, 3]),
      /has an invalid shape \[-1,3\]/,
    ],
  ];
  for (const [what, edit, message] of cases) {
    it(what, async () => {
      const file = modelCopy(edit);
      const error = await inspectBackboneWeights(tfjsBackbone(file)).catch((e) => e);
      expect(error).toBeInstanceOf(ModelError);
      expect(error.message).toContain(file);
      expect(error.message).toMatch(message);
    });
  }
});

describe('a damaged model.json or shard is one clear ModelError', () => {
  it('a truncated shard, before anything is decoded', async () => {
    const file = modelCopy((_json, dir) => fs.truncateSync(path.join(dir, 'weights.bin'), 1_000_000));
    const error = await refusal(file);
    expect(error).toBeInstanceOf(ModelError);
    expect(error.message).toMatch(/weights\.bin has 1,000,000 bytes, the manifest's weights \(.*\) need 2,154,032/);
    expect(error.hint).toMatch(/truncated/);
  });

  it('a manifest whose shapes do not add up to the shard bytes', async () => {
    const error = await refusal(modelCopy((json) => (json.weightsManifest[0].weights.at(-1).shape = [4096, 4096])));
    expect(error).toBeInstanceOf(ModelError);
    expect(error.message).toMatch(/need 69,\d{3},\d{3}/);
  });

  it('a manifest shape that fits the bytes but not the layer', async () => {
    // Swapping a kernel's dimensions keeps the byte count and breaks the layer.
    const file = modelCopy((json) => {
      const kernel = json.weightsManifest[0].weights.find((w: any) => w.name.endsWith('Conv1/kernel'));
      kernel.shape = [...kernel.shape].reverse();
    });
    const error = await refusal(file);
    expect(error).toBeInstanceOf(ModelError);
    expect(error.message).toMatch(
      /Conv1\/kernel from .*model\.json has shape \[\d+,3,3,3\], the model expects \[3,3,3,\d+\]/,
    );
  });

  it('a model.json that is not JSON, or not a Keras model', async () => {
    const notJson = modelCopy();
    fs.writeFileSync(notJson, '{"modelTopology": {"class_name": "Sequ');
    const error = await refusal(notJson);
    expect(error).toBeInstanceOf(ModelError);
    expect(error.message).toMatch(/model\.json: not valid JSON/);
    const notKeras = modelCopy((json) => (json.modelTopology = { hello: 'world' }));
    await expect(refusal(notKeras)).resolves.toMatchObject({
      name: 'ModelError',
      message: expect.stringMatching(/is not a Keras model/),
    });
  });
});

describe('Keras .h5 weights', () => {
  let good: string;
  beforeAll(async () => {
    const source = await loadBackbone(
      { name: 'mobilenet_v2', weights: 'nsfwjs', cut_layer: 'out_relu', trainable: false, preprocessing: 'auto' },
      [96, 96],
    );
    good = path.join(tmp, 'mobilenet_v2.h5');
    await writeKerasH5(good, layerWeights(source.model));
    for (const w of source.model.weights) w.dispose();
  });

  const h5Backbone = (
    file: string,
    name: BackboneConfig['name'] = 'mobilenet_v2',
    cut_layer = 'block_2_add',
  ): BackboneConfig => ({
    name,
    weights: file,
    cut_layer,
    trainable: false,
    preprocessing: 'auto',
  });

  const truncated = () => {
    const file = path.join(tmp, 'truncated.h5');
    fs.writeFileSync(file, fs.readFileSync(good).subarray(0, 3_000_000));
    return file;
  };

  it('a truncated file is one ModelError naming it and saying what to do', async () => {
    const file = truncated();
    for (const read of [() => readKerasH5(file), () => loadBackbone(h5Backbone(file), [96, 96])]) {
      const error = await read().catch((e) => e);
      expect(error).toBeInstanceOf(ModelError);
      expect(error.message).toBe(
        `${file} is not a readable Keras weights file: it is truncated (3,000,000 of ${fs.statSync(good).size.toLocaleString('en-US')} bytes).`,
      );
      expect(error.hint).toMatch(/truncated or corrupt: download \(or export\) it again/);
    }
  });

  it('inspectBackboneWeights lists the layers of a good file and rejects bad ones without reading values', async () => {
    const { layerNames } = await inspectBackboneWeights(h5Backbone(good));
    expect(layerNames).toContain('block_2_add');
    expect(layerNames.at(-1)).toBe('out_relu');
    await expect(inspectBackboneWeights(h5Backbone(truncated()))).rejects.toThrow(/it is truncated/);
    // The MobileNetV2 file for InceptionV3.
    await expect(inspectBackboneWeights(h5Backbone(good, 'inception_v3', 'mixed7'))).rejects.toThrow(
      /has no weights for \d+ layers of the model: conv2d_1, /,
    );
  });

  it('a file of another width (alpha) is found by its shapes', async () => {
    const narrow = path.join(tmp, 'narrow.h5');
    const weights = await readKerasH5(good);
    weights.set('Conv1', [{ name: 'kernel', shape: [3, 3, 3, 16], values: new Float32Array(3 * 3 * 3 * 16) }]);
    await writeKerasH5(narrow, weights);
    await expect(inspectBackboneWeights(h5Backbone(narrow))).rejects.toThrow(
      /Layer Conv1 expects weights of shapes \[3,3,3,32\], .*narrow\.h5 has \[3,3,3,16\]/,
    );
  });

  it('an HDF5 file that is not Keras weights', async () => {
    await h5wasm.ready;
    const file = path.join(tmp, 'other.h5');
    const f = new h5wasm.File(file, 'w');
    f.create_dataset({ name: 'temperature', data: new Float32Array([1, 2, 3]) });
    f.close();
    await expect(inspectBackboneWeights(h5Backbone(file))).rejects.toThrow(
      /is an HDF5 file but not a Keras weights file/,
    );
  });

  describe('in xp check and before xp run decodes any image', () => {
    const experiment = (name: string, weights: string, backbone = 'mobilenet_v2', cut = 'block_2_add') => {
      const file = path.join(tmp, `${name}.yaml`);
      fs.writeFileSync(
        file,
        `name: ${name}
data: {train: ${dataset}/train, validation: ${dataset}/validation, image_size: [96, 96], batch_size: 4, max_per_class: 4}
backbone: {name: ${backbone}, weights: ${weights}, cut_layer: ${cut}}
head: {pooling: avg}
training: {epochs: 1, steps_per_epoch: 1, validation_steps: 1}
tracking: {enabled: false}
`,
      );
      return file;
    };

    it('xp check accepts a good file and reports a truncated one on one line', async () => {
      expect((await xp(['check', experiment('good-h5', good)])).exitCode).toBe(0);
      const r = await xp(['check', experiment('truncated-h5', truncated())]);
      expect(r.exitCode).toBe(2);
      expectOneCleanError(
        r,
        /truncated-h5\.yaml:3:\d+: backbone\.weights: .*truncated\.h5 is not a readable Keras weights file: it is truncated/,
      );
    });

    it('xp check reports a file whose HDF5 structure is corrupt, without HDF5 or WebAssembly noise', async () => {
      const file = path.join(tmp, 'corrupt.h5');
      const bytes = fs.readFileSync(good);
      for (let i = 1000; i < 4000; i++) bytes[i] = (i * 7) & 255;
      fs.writeFileSync(file, bytes);
      const r = await xp(['check', experiment('corrupt-h5', file)]);
      expect(r.exitCode).toBe(2);
      expectOneCleanError(
        r,
        /backbone\.weights: .*corrupt\.h5 is not a readable Keras weights file: .*\. The file is truncated or corrupt/,
      );
    });

    it('xp check reports a MobileNetV2 file given for inception_v3', async () => {
      const r = await xp(['check', experiment('wrong-architecture', good, 'inception_v3', 'mixed7')]);
      expect(r.exitCode).toBe(2);
      expectOneCleanError(r, /backbone\.weights: .*mobilenet_v2\.h5 has no weights for \d+ layers of the model/);
    });

    it('xp run stops on a truncated file before decoding the images', async () => {
      const r = await xp(['run', experiment('truncated-run', truncated()), '--no-track']);
      expectOneCleanError(r, /backbone\.weights: .*it is truncated/);
      expect(r.stdout).not.toMatch(/Found \d+ training/);
    });

    it('xp check reports a model.json whose weights path leaves its folder', async () => {
      const file = modelCopy((json) => (json.weightsManifest[0].paths = ['../../../../../../../../etc/passwd']));
      const r = await xp(['check', experiment('escaping-model', file, 'mobilenet_v2', 'out_relu')]);
      expect(r.exitCode).toBe(2);
      expectOneCleanError(r, /model\.json lists the weight file "(\.\.\/)+etc\/passwd", which is outside its folder/);
    });
  });
});

describe('a damaged run folder under xp predict and xp evaluate', () => {
  const image = path.join(dataset, 'validation/cats/cat.2000.jpg');
  let good: string;
  beforeAll(async () => {
    const model = tf.sequential({
      layers: [tf.layers.flatten({ inputShape: [8, 8, 3] }), tf.layers.dense({ units: 1, activation: 'sigmoid' })],
    });
    good = path.join(tmp, 'runs', 'good');
    await writeSavedModel(good, model, {
      class_names: ['cats', 'dogs'],
      image_size: [8, 8],
      preprocessing: 'rescale',
      interpolation: 'bilinear',
    });
    model.dispose();
  });

  // A copy of the good run, damaged by `damage` (given its model/ folder).
  let runs = 0;
  const damagedRun = (damage: (modelDir: string) => void) => {
    const dir = path.join(tmp, 'runs', `damaged-${++runs}`);
    fs.cpSync(good, dir, { recursive: true });
    damage(path.join(dir, 'model'));
    return dir;
  };

  it('a good run predicts, and reads back what was written', async () => {
    const r = await xp(['predict', good, image]);
    expect(r.exitCode, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/cat\.2000\.jpg {2}(cats|dogs) {2}0\.\d{4}/);
    const saved = await readSavedModel(good);
    expect(saved.info).toEqual({
      class_names: ['cats', 'dogs'],
      image_size: [8, 8],
      preprocessing: 'rescale',
      interpolation: 'bilinear',
    });
    saved.model.dispose();
    expect(fs.readdirSync(good)).toEqual(['model']); // no model.partial left behind
  });

  const cases: [string, (modelDir: string) => void, RegExp][] = [
    [
      'a corrupt xp.json',
      (d) => fs.writeFileSync(path.join(d, 'xp.json'), '{"class_names": ["cats", "dogs"'),
      /damaged-\d+: model\/xp\.json is not valid JSON/,
    ],
    ['a missing xp.json', (d) => fs.rmSync(path.join(d, 'xp.json')), /damaged-\d+: model\/xp\.json is missing/],
    [
      'an xp.json without its image size',
      (d) => fs.writeFileSync(path.join(d, 'xp.json'), '{"class_names": ["cats", "dogs"], "preprocessing": "rescale"}'),
      /model\/xp\.json has no valid image_size/,
    ],
    [
      'a truncated weights.bin',
      (d) => fs.truncateSync(path.join(d, 'weights.bin'), 100),
      /damaged-\d+\/model\/model\.json: the weight file weights\.bin has 100 bytes, the manifest's weights .* need 772/,
    ],
    [
      'a model.json whose weights path leaves the run folder',
      (d) =>
        fs.writeFileSync(
          path.join(d, 'model.json'),
          fs
            .readFileSync(path.join(d, 'model.json'), 'utf8')
            .replace('"weights.bin"', '"../../../../../../../../etc/passwd"'),
        ),
      /model\/model\.json lists the weight file ".*etc\/passwd", which is outside its folder/,
    ],
    [
      'a model.json that is not JSON',
      (d) => fs.writeFileSync(path.join(d, 'model.json'), 'not json'),
      /damaged-\d+\/model\/model\.json: not valid JSON/,
    ],
    [
      'an xp.json of another model',
      (d) =>
        fs.writeFileSync(
          path.join(d, 'xp.json'),
          '{"class_names": ["a", "b", "c"], "image_size": [8, 8], "preprocessing": "rescale"}',
        ),
      /model\/model\.json does not match model\/xp\.json: the model has 1 output unit, the 3 classes of xp\.json need 3/,
    ],
  ];
  for (const [what, damage, message] of cases) {
    it(`${what} is one clear error naming the run folder and the file`, async () => {
      const dir = damagedRun(damage);
      expectOneCleanError(await xp(['predict', dir, image]), message);
    });
  }

  it('xp evaluate says the same', async () => {
    const dir = damagedRun((d) => fs.truncateSync(path.join(d, 'weights.bin'), 10));
    expectOneCleanError(
      await xp(['evaluate', dir, path.join(dataset, 'validation')]),
      /model\.json: the weight file weights\.bin has 10 bytes/,
    );
  });
});
