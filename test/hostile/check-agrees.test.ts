// `xp check` says yes only where `xp run` does: both call the one preflight (src/cli/preflight.ts), so every check
// run makes before training is one check makes too. Named cases from issue 23, then a property test: seeded random
// variations of a small valid experiment and damaged files (data folders, weights files, the file itself) must get
// the same verdict from `xp check`, from `xp run --dry-run` and from `xp run` itself (one step of one epoch on a
// few images, in this process so that TensorFlow loads once). Data sets are made in a temp folder from the shared
// cats-and-dogs images, never copied into the repository.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it, vi } from 'vitest';
import { main } from '../../src/cli/main.ts';

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

  it('class_mode binary with three classes', async () => {
    const file = tiny(dataset(['birds', 'cats', 'dogs']), { data: ', class_mode: binary' });
    const checked = await check(file);
    expect(checked.code, checked.out).toBe(2);
    expect(checked.out).toMatch(/:2:\d+: data\.class_mode is binary but .*train has 3 classes \(birds, cats, dogs\)/);
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
});
