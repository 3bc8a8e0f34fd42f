// `xp check` says yes only where `xp run` does: both call the one preflight (src/cli/preflight.ts), so every check
// run makes before training is one check makes too. Named cases from issue 23, then a property test: seeded random
// variations of a small valid experiment and damaged files (data folders, weights files, the file itself) must get
// the same verdict from `xp check`, from `xp run --dry-run` and from `xp run` itself (one step of one epoch on a
// few images, in this process so that TensorFlow loads once). Data sets are made in a temp folder from the shared
// cats-and-dogs images, never copied into the repository.
import AdmZip from 'adm-zip';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it, vi } from 'vitest';
import YAML from 'yaml';
import { main } from '../../src/cli/main.ts';
import { loadExperiment } from '../../src/config/load.ts';
import { loadBackbone } from '../../src/model/backbone.ts';
import { prepareData } from '../../src/train/data.ts';
import { createRng, type Rng } from '../../src/util/random.ts';

const root = path.resolve(import.meta.dirname, '../..');
const shared = path.resolve(root, '../shared');
const images = path.join(shared, 'datasets/cats_and_dogs_filtered');
const teachable = path.join(shared, 'models/teachable-machine-mobilenet-v2');
const tmp = fs.realpathSync(fs.mkdtempSync(path.join(os.tmpdir(), 'xp-check-agrees-')));
const previousRunsDir = process.env.XP_RUNS_DIR;
process.env.XP_RUNS_DIR = path.join(tmp, 'runs');
afterAll(() => {
  if (previousRunsDir === undefined) delete process.env.XP_RUNS_DIR;
  else process.env.XP_RUNS_DIR = previousRunsDir;
  fs.rmSync(tmp, { recursive: true, force: true });
});

let made = 0;
/** A fresh folder under tmp. */
const fresh = (name: string) => {
  const dir = path.join(tmp, `${name}-${++made}`);
  fs.mkdirSync(dir, { recursive: true });
  return dir;
};

/** train/ and validation/ with `perClass` images of each class (cats and dogs take real images; others, cats'). */
function dataset(classes: string[] = ['cats', 'dogs'], perClass = 3): string {
  const dir = fresh('data');
  for (const split of ['train', 'validation'] as const) {
    for (const cls of classes) {
      const from = path.join(images, split, cls === 'dogs' ? 'dogs' : 'cats');
      fs.mkdirSync(path.join(dir, split, cls), { recursive: true });
      for (const name of fs.readdirSync(from).sort().slice(0, perClass))
        fs.copyFileSync(path.join(from, name), path.join(dir, split, cls, name));
    }
  }
  return dir;
}

/** A copy of the Teachable Machine model (model.json and weights.bin), its model.json edited by `edit`. */
function modelCopy(edit: (json: any) => void = () => {}): string {
  const dir = fresh('model');
  fs.copyFileSync(path.join(teachable, 'weights.bin'), path.join(dir, 'weights.bin'));
  const json = JSON.parse(fs.readFileSync(path.join(teachable, 'model.json'), 'utf8'));
  edit(json);
  fs.writeFileSync(path.join(dir, 'model.json'), JSON.stringify(json));
  return path.join(dir, 'model.json');
}

function experimentFile(text: string): string {
  const file = path.join(fresh('exp'), 'exp.yaml');
  fs.writeFileSync(file, text);
  return file;
}

const tiny = (data: string, more: { data?: string; weights?: string; rest?: string } = {}) =>
  experimentFile(`name: agrees
data: {train: ${data}/train, validation: ${data}/validation, image_size: [64, 64], batch_size: 2${more.data ?? ''}}
backbone: {name: mobilenet_v2, weights: ${more.weights ?? 'nsfwjs'}, cut_layer: block_2_add}
head: {pooling: avg, units: [4]}
training: {epochs: 1, steps_per_epoch: 1}
${more.rest ?? ''}`);

/** Exit code and what `xp <args>` printed, run in this process (TensorFlow loads once for the whole file). */
async function xp(args: string[]): Promise<{ code: number; out: string }> {
  const out: string[] = [];
  const keep = (...a: unknown[]) => void out.push(a.map(String).join(' '));
  const spies = [
    vi.spyOn(console, 'error').mockImplementation(keep),
    vi.spyOn(console, 'log').mockImplementation(keep),
    vi.spyOn(process.stdout, 'write').mockImplementation((chunk) => {
      keep(String(chunk).trimEnd());
      return true;
    }),
  ];
  try {
    const code = await main(args);
    return { code, out: out.join('\n') };
  } finally {
    for (const s of spies) s.mockRestore();
  }
}
const check = (file: string, ...args: string[]) => xp(['check', file, ...args]);
const run = (file: string, ...args: string[]) => xp(['run', file, '--no-track', '--no-backup', '--quiet', ...args]);

describe('xp check refuses what xp run refuses', () => {
  it('a data set with one class', async () => {
    const file = tiny(dataset(['cats']));
    const checked = await check(file);
    expect(checked.code, checked.out).toBe(2);
    expect(checked.out).toMatch(
      /:2:\d+: data\.train: .*train has one class folder \(cats\); a classifier needs at least two/,
    );
    const ran = await run(file);
    expect(ran).toEqual(checked);
  });

  it('a data set given by url with one class, once it is unpacked in the data directory (nothing is downloaded by check)', async () => {
    const zip = new AdmZip();
    const data = dataset(['cats']);
    for (const split of ['train', 'validation'])
      for (const image of fs.readdirSync(path.join(data, split, 'cats')))
        zip.addFile(`pets/${split}/cats/${image}`, fs.readFileSync(path.join(data, split, 'cats', image)));
    const archive = path.join(fresh('archive'), 'pets.zip');
    zip.writeZip(archive);
    const dataDir = fresh('data-dir');
    const file = experimentFile(`name: by-url
data: {url: "file://${archive}", train: pets/train, validation: pets/validation, image_size: [64, 64]}
backbone: {name: mobilenet_v2, weights: nsfwjs, cut_layer: block_2_add}
training: {epochs: 1, steps_per_epoch: 1}
`);
    const previous = process.env.XP_DATA_DIR;
    process.env.XP_DATA_DIR = dataDir;
    try {
      // Not there yet: check cannot look into it, run downloads (unpacks) it and refuses it.
      expect((await check(file)).code).toBe(0);
      const first = await run(file);
      expect(first.code, first.out).toBe(1);
      expect(first.out).toContain(`${dataDir}/pets/train has one class folder (cats)`);
      const checked = await check(file);
      expect(checked.code, checked.out).toBe(2);
      expect(checked.out).toMatch(
        /:2:\d+: data\.train: .*pets\/train has one class folder \(cats\); a classifier needs at least two/,
      );
      expect(await run(file)).toEqual(checked);
    } finally {
      if (previous === undefined) delete process.env.XP_DATA_DIR;
      else process.env.XP_DATA_DIR = previous;
    }
  });

  it('class_mode binary with three classes', async () => {
    const file = tiny(dataset(['birds', 'cats', 'dogs']), { data: ', class_mode: binary' });
    const checked = await check(file);
    expect(checked.code, checked.out).toBe(2);
    expect(checked.out).toMatch(/:2:\d+: data\.class_mode is binary but .*train has 3 classes \(birds, cats, dogs\)/);
    expect(await run(file)).toEqual(checked);
  });

  it('a class whose files are named as images but none is one xp can decode (text, BMP)', async () => {
    const data = dataset();
    const bmp = Buffer.concat([Buffer.from('BM'), Buffer.alloc(60)]);
    for (const [i, name] of fs.readdirSync(path.join(data, 'train/dogs')).entries())
      fs.writeFileSync(path.join(data, 'train/dogs', name), i === 0 ? bmp : 'not an image\n');
    const file = tiny(data);
    const checked = await check(file);
    expect(checked.code, checked.out).toBe(2);
    expect(checked.out).toMatch(
      /data\.train: Class folder .*train\/dogs holds no image xp can decode: none of its 3 files is a JPEG, PNG, GIF or WebP image \(dog\.0\.jpg: a BMP image, which xp does not decode\)/,
    );
    expect(await run(file)).toEqual(checked);
  });

  it('a model.json whose weight shape is reversed (same byte count), before any image is decoded', async () => {
    const weights = modelCopy((json) => {
      const kernel = json.weightsManifest[0].weights.find((w: { name: string }) => w.name === 'Conv1/kernel');
      kernel.shape.reverse();
    });
    const file = tiny(dataset(), { weights });
    const checked = await check(file);
    expect(checked.code, checked.out).toBe(2);
    expect(checked.out).toMatch(
      /backbone\.weights: Weight Conv1\/kernel from .*model\.json has shape \[16,3,3,3\], the model expects \[3,3,3,16\]/,
    );
    const ran = await run(file);
    expect(ran).toEqual(checked);
    expect(ran.out).not.toContain('Decoding');
  });

  it('images too small for a model nested in its model.json (a dilated convolution), before any image is decoded', async () => {
    const weights = modelCopy((json) => {
      const nested = json.modelTopology.config.layers[0].config.layers[0].config.layers;
      const depthwise = nested.find((l: { name: string }) => l.name === 'expanded_conv_depthwise');
      Object.assign(depthwise.config, { padding: 'valid', dilation_rate: [20, 20] });
    });
    const file = tiny(dataset(), { weights });
    const checked = await check(file);
    expect(checked.code, checked.out).toBe(2);
    expect(checked.out).toMatch(
      /:2:\d+: data\.image_size \[64, 64\] is too small for .*model\.json cut at block_2_add: layer expanded_conv_depthwise would output -8x-8; raise data\.image_size or cut earlier/,
    );
    const ran = await run(file);
    expect(ran).toEqual(checked);
  });

  it('a model.json lacking a weight of the cut backbone', async () => {
    const weights = modelCopy((json) => {
      // The entry's bytes stay in the file, so the sizes no longer add up: drop them by renaming the weight instead.
      const entry = json.weightsManifest[0].weights.find((w: { name: string }) => w.name === 'bn_Conv1/gamma');
      entry.name = 'bn_Conv1/gamma_renamed';
    });
    const file = tiny(dataset(), { weights });
    const checked = await check(file);
    expect(checked.code, checked.out).toBe(2);
    expect(checked.out).toMatch(
      /backbone\.weights: .*model\.json has no values for 1 weights of the model: bn_Conv1\/gamma/,
    );
    expect(await run(file)).toEqual(checked);
  });
});

describe('data.follow_links and a class folder that is a symbolic link', () => {
  const linked = () => {
    const data = dataset();
    const elsewhere = fresh('elsewhere');
    fs.renameSync(path.join(data, 'validation/dogs'), path.join(elsewhere, 'dogs'));
    fs.symlinkSync(path.join(elsewhere, 'dogs'), path.join(data, 'validation/dogs'));
    return data;
  };

  it('with follow_links: true, xp check follows it as xp run does', async () => {
    const file = tiny(linked(), { data: ', follow_links: true' });
    const checked = await check(file);
    expect(checked.code, checked.out).toBe(0);
    const ran = await run(file);
    expect(ran.code, ran.out).toBe(0);
    expect(ran.out).toContain('Found 6 training and 6 validation images of 2 classes');
  });

  it('without it, the error names the link and the option', async () => {
    const data = linked();
    const file = tiny(data);
    const checked = await check(file);
    expect(checked.code, checked.out).toBe(2);
    expect(checked.out).toContain(
      `data.validation: Validation data lacks class "dogs" found in train: ${data}/validation/dogs is a symbolic link, not followed unless data.follow_links is true`,
    );
    expect(await run(file)).toEqual(checked);
  });
});

describe('one pass: every independent problem of a file at once', () => {
  it('a schema error does not hide a cut-layer typo or a misspelt folder, which gets "did you mean"', async () => {
    const data = dataset();
    const file = experimentFile(`name: one-pass
data: {train: ${data}/trian, validation: ${data}/validation, image_size: [64, 64]}
backbone: {name: mobilenet_v2, cut_layer: blok_2_add}
head: {pooling: average}
`);
    const checked = await check(file);
    expect(checked.code).toBe(2);
    const lines = checked.out.split('\n');
    expect(lines).toContainEqual(
      expect.stringMatching(/:4:17: head\.pooling must be one of flatten, avg, max \(got "average"\)/),
    );
    expect(lines).toContainEqual(
      expect.stringMatching(
        /:3:\d+: backbone\.cut_layer "blok_2_add" is not a layer of mobilenet_v2; did you mean block_2_add\?/,
      ),
    );
    expect(lines).toContainEqual(
      expect.stringMatching(
        new RegExp(`:2:\\d+: data\\.train: no such directory ${data}/trian; did you mean ${data}/train\\?`),
      ),
    );
    expect(lines).toHaveLength(3);
    expect(await run(file)).toEqual(checked);
  });

  it('a class folder misspelt in validation gets "did you mean" from train\'s classes', async () => {
    const data = dataset();
    fs.renameSync(path.join(data, 'validation/dogs'), path.join(data, 'validation/dgos'));
    const file = tiny(data);
    const checked = await check(file);
    expect(checked.out).toMatch(
      /:2:\d+: data\.validation: Validation data lacks class "dogs" found in train; did you mean validation's "dgos"\? Add a validation subfolder/,
    );
    expect(await run(file)).toEqual(checked);
  });
});

// The property: random variations of a small valid experiment, some with one or two damages, each checked three ways.
// A damage is made in the case's own folders (data, model) or in its file; `says` names what the case is, for the
// failure message. Seeded: the same 40 cases every run.
const CASES = 60;
const CUTS = [
  'Conv1_relu',
  'expanded_conv_project_BN',
  'block_1_expand_relu',
  'block_1_project_BN',
  'block_2_add',
  'block_3_depthwise_relu',
  'block_5_add',
] as const;
const DAMAGES = [
  'one class',
  'three classes, class_mode binary',
  'validation lacks a class',
  'misspelt validation class',
  'linked class folder',
  'linked images',
  'empty class folder',
  'files named .jpg that are not images',
  'one unreadable image',
  'images cut short',
  'missing folder',
  'misspelt folder',
  'a file as the train folder',
  'truncated weights',
  'reversed weight shape',
  'renamed weight',
  'model.json not JSON',
  'misspelt cut layer',
  'trainable_from after the cut',
  'schema error',
  'tiny images',
  'bad sweep value',
  'unknown field',
] as const;
type Damage = (typeof DAMAGES)[number];

interface Case {
  file: string;
  says: string[];
}

function makeCase(rng: Rng): Case {
  const pick = <T>(list: readonly T[]): T => list[rng.int(0, list.length - 1)];
  const chance = (p: number) => rng.next() < p;
  const damages = new Set<Damage>();
  if (!chance(0.3)) for (let k = chance(0.75) ? 1 : 2; k > 0; k--) damages.add(pick(DAMAGES));
  const has = (d: Damage) => damages.has(d);
  const says: string[] = [...damages];

  const data = dataset(has('three classes, class_mode binary') ? ['birds', 'cats', 'dogs'] : ['cats', 'dogs']);
  const elsewhere = fresh('elsewhere');
  const move = (from: string, link: boolean) => {
    const to = path.join(elsewhere, from.replaceAll('/', '-'));
    fs.renameSync(path.join(data, from), to);
    if (link) fs.symlinkSync(to, path.join(data, from));
  };
  const imagesOf = (dir: string) => fs.readdirSync(path.join(data, dir)).map((n) => path.join(data, dir, n));
  if (has('one class')) for (const split of ['train', 'validation']) move(`${split}/dogs`, false);
  if (has('validation lacks a class')) fs.rmSync(path.join(data, 'validation/cats'), { recursive: true, force: true });
  if (has('misspelt validation class') && fs.existsSync(path.join(data, 'validation/dogs')))
    fs.renameSync(path.join(data, 'validation/dogs'), path.join(data, 'validation/dgos'));
  if (has('linked class folder') && fs.existsSync(path.join(data, 'train/dogs'))) move('train/dogs', true);
  if (has('linked images') && fs.existsSync(path.join(data, 'train/cats')))
    for (const image of imagesOf('train/cats')) {
      const to = path.join(elsewhere, path.basename(image));
      fs.renameSync(image, to);
      fs.symlinkSync(to, image);
    }
  if (has('empty class folder') && fs.existsSync(path.join(data, 'validation/dogs')))
    for (const image of imagesOf('validation/dogs')) fs.rmSync(image);
  if (has('files named .jpg that are not images') && fs.existsSync(path.join(data, 'train/dogs')))
    for (const image of imagesOf('train/dogs')) fs.writeFileSync(image, 'not an image\n');
  if (has('one unreadable image') && fs.existsSync(path.join(data, 'train/cats')))
    fs.writeFileSync(imagesOf('train/cats')[0], '');
  // Headers intact: only decoding can tell, and it skips them (a run then has no validation image of that class).
  if (has('images cut short') && fs.existsSync(path.join(data, 'validation/cats')))
    for (const image of imagesOf('validation/cats')) fs.truncateSync(image, 200);
  const followLinks = chance(0.5);
  if (has('linked class folder') || has('linked images')) says.push(`follow_links: ${followLinks}`);

  // The Teachable Machine model (a nested MobileNetV2) or the bundled nsfwjs weights.
  const modelDamages: Damage[] = [
    'truncated weights',
    'reversed weight shape',
    'renamed weight',
    'model.json not JSON',
  ];
  const teachableModel = modelDamages.some(has) || chance(0.3);
  let weights = 'nsfwjs';
  if (teachableModel) {
    weights = modelCopy((json) => {
      const entries = json.weightsManifest[0].weights as { name: string; shape: number[] }[];
      const kernels = entries.filter((w) => w.name.endsWith('/kernel') && new Set(w.shape).size > 1);
      // Early layers, so that every cut keeps the one damaged.
      if (has('reversed weight shape')) pick(kernels.slice(0, 3)).shape.reverse();
      if (has('renamed weight')) entries[rng.int(0, 5)].name += '_renamed';
    });
    if (has('truncated weights')) {
      const bin = path.join(path.dirname(weights), 'weights.bin');
      fs.truncateSync(bin, fs.statSync(bin).size - 4 * rng.int(1, 100));
    }
    if (has('model.json not JSON')) fs.writeFileSync(weights, '{"modelTopology": ');
    says.push('teachable model.json');
  }

  const cut = pick(CUTS);
  const size = has('tiny images') ? [rng.int(4, 31), rng.int(32, 40)] : [rng.int(32, 96), rng.int(32, 96)];
  const experiment: Record<string, any> = {
    name: 'agrees',
    data: {
      train: has('missing folder')
        ? `${data}/nowhere/train`
        : has('a file as the train folder')
          ? `${data}/validation/cats/${fs.readdirSync(path.join(data, 'validation/cats'))[0]}`
          : `${data}/train`,
      validation: has('misspelt folder') ? `${data}/validaton` : `${data}/validation`,
      image_size: size,
      batch_size: rng.int(1, 4),
      ...(has('three classes, class_mode binary')
        ? { class_mode: 'binary' }
        : { class_mode: pick(['auto', 'categorical']) }),
      interpolation: pick(['nearest', 'bilinear', 'bicubic']),
      ...(chance(0.3) ? { max_per_class: rng.int(1, 5) } : {}),
      ...(has('linked class folder') || has('linked images') || chance(0.2) ? { follow_links: followLinks } : {}),
    },
    backbone: {
      name: 'mobilenet_v2',
      weights,
      cut_layer: has('misspelt cut layer') ? cut.replace('_', '__') : cut,
      ...(chance(0.2) ? { trainable: true } : {}),
      ...(has('trainable_from after the cut')
        ? { trainable_from: CUTS[CUTS.indexOf(cut) + 1] ?? 'out_relu' }
        : chance(0.2)
          ? { trainable_from: CUTS[rng.int(0, CUTS.indexOf(cut))] }
          : {}),
    },
    head: {
      pooling: has('schema error') ? 'average' : pick(['flatten', 'avg', 'max']),
      units: chance(0.5) ? [] : [rng.int(2, 8)],
      activation: pick(['relu', 'tanh', 'elu']),
      dropout: rng.int(0, 5) / 10,
    },
    augmentation: chance(0.5) ? { rotation_range: rng.int(0, 30), horizontal_flip: chance(0.5) } : {},
    optimizer: { name: pick(['rmsprop', 'adam', 'sgd', 'adagrad']), learning_rate: pick([0.01, 0.001, 0.0001]) },
    training: {
      epochs: 1,
      steps_per_epoch: rng.int(1, 2),
      ...(chance(0.3) ? { validation_steps: rng.int(1, 3) } : {}),
      seed: rng.int(1, 1000),
    },
    ...(has('bad sweep value') ? { sweep: { 'head.dropout': [0.1, 1.5] } } : {}),
    ...(has('unknown field') ? { heads: { units: [4] } } : {}),
  };
  says.push(`cut at ${experiment.backbone.cut_layer}`, `images ${size.join('x')}`);
  return { file: experimentFile(YAML.stringify(experiment)), says };
}

/**
 * Whether training's own first steps take a file the schema accepts: its data prepared (folders scanned, images
 * decoded) and its backbone loaded for every trial, without the preflight. False when the schema refuses it.
 */
async function trainingTakes(file: string): Promise<boolean> {
  const loaded = await loadExperiment(file, { deep: false }).catch(() => undefined);
  if (!loaded) return false;
  for (const { experiment } of loaded.trials) {
    try {
      await prepareData(experiment.data, { baseDir: path.dirname(file) });
      const backbone = await loadBackbone(experiment.backbone, experiment.data.image_size);
      backbone.model.dispose();
    } catch {
      return false;
    }
  }
  return true;
}

describe('property: xp check, xp run --dry-run and xp run give the same verdict', () => {
  it(`on ${CASES} seeded variations of a small experiment, damaged or not`, async () => {
    const rng = createRng(23);
    const disagreements: string[] = [];
    const verdicts = { ok: 0, refused: 0 };
    for (let n = 1; n <= CASES; n++) {
      const { file, says } = makeCase(rng);
      const checked = await check(file);
      const dry = await xp(['run', file, '--dry-run', '--no-track']);
      const ran = await run(file);
      verdicts[checked.code === 0 ? 'ok' : 'refused']++;
      // xp run refuses at the same preflight: its verdict alone cannot show the checks refusing what training takes.
      const takes = checked.code === 0 ? undefined : await trainingTakes(file);
      const agree =
        dry.code === checked.code &&
        (checked.code === 0 ? ran.code === 0 : ran.code === checked.code && ran.out === checked.out && !takes);
      if (!agree)
        disagreements.push(
          `case ${n} (${says.join(', ')}): check ${checked.code}, dry run ${dry.code}, run ${ran.code}${takes ? ', training takes it' : ''}\n` +
            `  check: ${checked.out.split('\n').slice(-3).join('\n         ')}\n` +
            `  run:   ${ran.out.split('\n').slice(-3).join('\n         ')}`,
        );
      fs.rmSync(path.join(tmp, 'runs'), { recursive: true, force: true });
    }
    expect(disagreements, disagreements.join('\n')).toEqual([]);
    // The cases are not all of one kind: both verdicts are exercised.
    expect(verdicts.ok).toBeGreaterThanOrEqual(8);
    expect(verdicts.refused).toBeGreaterThanOrEqual(8);
  }, 900_000);
});
