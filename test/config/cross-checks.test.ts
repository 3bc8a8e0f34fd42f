// Cross-checks get layer names from the function they are handed (the CLI hands in src/model's); config itself
// never imports src/model, and src/ never imports bench/.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import type { LayerFacts } from '../../src/config/cross-checks.ts';
import { loadExperiment } from '../../src/config/load.ts';
import { ConfigProblems, formatProblem } from '../../src/config/problems.ts';

const root = path.resolve(import.meta.dirname, '../..');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'xp-cross-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

function experiment(backbone: string): string {
  const file = path.join(tmp, `${Math.random().toString(36).slice(2)}.yaml`);
  fs.writeFileSync(
    file,
    `name: cross\ndata: {url: https://example.com/d.zip, train: t, validation: v}\nbackbone: ${backbone}\n`,
  );
  return file;
}

async function problems(file: string, layers: LayerFacts): Promise<string[]> {
  const error = await loadExperiment(file, { layers }).then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error, 'loaded without problems').toBeInstanceOf(ConfigProblems);
  return (error as ConfigProblems).problems.map(formatProblem);
}

// A toy backbone: four layers in a chain; cut at `c`, it keeps a, b, c.
const chain = ['a', 'b', 'mixed7', 'd'];
const toy: LayerFacts = { layerNames: async (_b, cut) => (cut ? chain.slice(0, chain.indexOf(cut) + 1) : chain) };

describe('cross-checks with handed layer names', () => {
  it('cut_layer and trainable_from are checked against the names handed in, with an edit-distance suggestion', async () => {
    const file = experiment('{name: inception_v3, cut_layer: mixd7}');
    expect(await problems(file, toy)).toEqual([
      `${file}:3:43: backbone.cut_layer "mixd7" is not a layer of inception_v3; did you mean mixed7?`,
    ]);
  });

  it('trainable_from after the cut layer is refused: it is not part of the cut backbone', async () => {
    const file = experiment('{name: inception_v3, cut_layer: mixed7, trainable_from: d}');
    expect(await problems(file, toy)).toEqual([
      expect.stringMatching(
        new RegExp(`^${file}:3:67: backbone.trainable_from "d" is not part of the backbone cut at mixed7`),
      ),
    ]);
    await expect(
      loadExperiment(experiment('{name: inception_v3, cut_layer: mixed7, trainable_from: b}'), { layers: toy }),
    ).resolves.toBeDefined();
  });

  it('an error thrown by the handed function is a problem at backbone.weights, with its hint', async () => {
    const weights = path.join(tmp, 'model.json');
    fs.writeFileSync(weights, '{}');
    const file = experiment(`{name: mobilenet_v2, weights: ${weights}, cut_layer: out_relu}`);
    const failing: LayerFacts = {
      layerNames: async () => {
        throw Object.assign(new Error(`the weight file group1-shard1of1.bin listed in ${weights} is truncated.`), {
          hint: 'Export the model again.',
        });
      },
    };
    expect(await problems(file, failing)).toEqual([
      `${file}:3:41: backbone.weights: the weight file group1-shard1of1.bin listed in ${weights} is truncated. Export the model again.`,
    ]);
  });
});

describe('import graph', () => {
  const sources = (dir: string): string[] =>
    fs
      .readdirSync(dir, { withFileTypes: true })
      .flatMap((e) =>
        e.isDirectory() ? sources(path.join(dir, e.name)) : e.name.endsWith('.ts') ? [path.join(dir, e.name)] : [],
      );
  const imports = (file: string) =>
    [...fs.readFileSync(file, 'utf8').matchAll(/(?:from\s+|import\s*\(\s*)['"]([^'"]+)['"]/g)].map((m) =>
      path.resolve(path.dirname(file), m[1]),
    );

  it('src/config imports nothing from src/model', () => {
    const model = path.join(root, 'src/model');
    const offending = sources(path.join(root, 'src/config')).flatMap((f) =>
      imports(f)
        .filter((i) => i.startsWith(model))
        .map((i) => `${path.relative(root, f)} -> ${path.relative(root, i)}`),
    );
    expect(offending).toEqual([]);
  });

  it('no file in src/ imports bench/', () => {
    const bench = path.join(root, 'bench');
    const offending = sources(path.join(root, 'src')).flatMap((f) =>
      imports(f)
        .filter((i) => i.startsWith(bench))
        .map((i) => `${path.relative(root, f)} -> ${path.relative(root, i)}`),
    );
    expect(offending).toEqual([]);
  });
});
