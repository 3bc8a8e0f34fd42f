// Layer names of the backbones and a check of their weights files, read from topology JSON, HDF5
// structure and file sizes only: `xp check` and `xp run`'s pre-flight find a bad or mismatched
// weights file without loading TensorFlow or any weight value.
import path from 'node:path';
import type { BackboneConfig, BackboneName } from '../config/types.ts';
import { ModelError } from '../errors.ts';
import { pairH5Layers, type LayerShapes } from './h5-layers.ts';
import { nsfwjsModelJson } from './nsfwjs.ts';
import { inspectTfjsModel } from './tfjs-model.ts';
import { allLayerNames, cutAt, findLayerPath, modelConfigOf, type LayerJson } from './topology.ts';

// Last layer of the Keras `include_top=False` model; the nsfwjs topologies go on with their own head.
export const KERAS_TOP: Record<BackboneName, string> = { inception_v3: 'mixed10', mobilenet_v2: 'out_relu' };

/** The Keras architecture (no top) as a topology JSON, taken from the model bundled with nsfwjs. */
export function kerasArchitecture(name: BackboneName): LayerJson {
  const full = modelConfigOf(nsfwjsModelJson(name).modelTopology);
  const top = findLayerPath(full, KERAS_TOP[name]);
  if (!top) {
    throw new ModelError(`The ${name} model bundled with nsfwjs has no layer ${KERAS_TOP[name]}.`, {
      hint: "Reinstall xp's dependencies (npm ci): the nsfwjs package is not the version xp was written for.",
    });
  }
  return cutAt(full, top);
}

export type WeightsSource =
  | { kind: 'nsfwjs' }
  | { kind: 'imagenet' }
  | { kind: 'h5'; file: string }
  | { kind: 'tfjs'; file: string };

/** What `backbone.weights` names; file paths resolved from baseDir (default: the working directory). */
export function weightsSource(weights: string, baseDir = process.cwd()): WeightsSource {
  if (weights === 'nsfwjs' || weights === 'imagenet') return { kind: weights };
  if (/\.h5$/i.test(weights)) return { kind: 'h5', file: path.resolve(baseDir, weights) };
  if (/\.json$/i.test(weights)) return { kind: 'tfjs', file: path.resolve(baseDir, weights) };
  throw new ModelError(
    `backbone.weights must be nsfwjs, imagenet, a Keras .h5 file or a tfjs model.json; got "${weights}".`,
    {
      hint: 'Use `weights: imagenet` for the Keras ImageNet weights.',
    },
  );
}

// Weight shapes of the architecture's layers that the backbone cut at `cutLayer` keeps (all of them
// when the cut layer is unknown: that is reported on its own), from the nsfwjs manifest.
function architectureShapes(name: BackboneName, cutLayer: string | undefined): LayerShapes[] {
  const architecture = kerasArchitecture(name);
  const at = cutLayer === undefined ? undefined : findLayerPath(architecture, cutLayer);
  const byLayer = new Map<string, { shape: number[] }[]>();
  for (const entry of nsfwjsModelJson(name).weightsManifest.flatMap((g) => g.weights)) {
    const layer = entry.name.split('/')[0];
    byLayer.set(layer, [...(byLayer.get(layer) ?? []), entry]);
  }
  return allLayerNames(at ? cutAt(architecture, at) : architecture).flatMap((name) => {
    const weights = byLayer.get(name);
    return weights ? [{ name, weights }] : [];
  });
}

// h5wasm compiles its WebAssembly when imported: only when a .h5 file is given.
async function inspectH5(file: string, cfg: Pick<BackboneConfig, 'name' | 'cut_layer'>): Promise<void> {
  const { readKerasH5Shapes } = await import('./h5.ts');
  pairH5Layers(architectureShapes(cfg.name, cfg.cut_layer), await readKerasH5Shapes(file), file);
}

export interface InspectedWeights {
  /** Every layer the backbone can be cut at, nested models included, in graph order. */
  layerNames: string[];
  /** What the names belong to, for messages: the backbone's name or the model.json's path. */
  what: string;
}

/**
 * Checks a backbone's weights file without reading its values (a .h5 file's structure and shapes
 * against the architecture, a model.json's manifest and weight files) and returns its layer names;
 * a ModelError naming the file when it is unusable.
 */
export async function inspectBackboneWeights(
  cfg: Pick<BackboneConfig, 'name' | 'weights' | 'cut_layer'>,
  opts: { baseDir?: string } = {},
): Promise<InspectedWeights> {
  const source = weightsSource(cfg.weights, opts.baseDir);
  if (source.kind === 'tfjs') {
    const model = await inspectTfjsModel(source.file);
    return {
      layerNames: allLayerNames(model.topology),
      what: path.relative(process.cwd(), source.file) || source.file,
    };
  }
  if (source.kind === 'h5') await inspectH5(source.file, cfg);
  return { layerNames: allLayerNames(kerasArchitecture(cfg.name)), what: cfg.name };
}

/** Names of the layers a backbone can be cut at, once its weights file is checked (see inspectBackboneWeights). */
export async function backboneLayerNames(
  cfg: Pick<BackboneConfig, 'name' | 'weights' | 'cut_layer'>,
  opts: { baseDir?: string } = {},
): Promise<string[]> {
  return (await inspectBackboneWeights(cfg, opts)).layerNames;
}

// Block outputs are the sensible cut points; list them first in errors.
const BLOCK_OUTPUT = /^(mixed\d+|block_\d+_add|out_relu)$/;

export function unknownLayerError(field: string, given: string, names: string[], what: string): ModelError {
  const blocks = names.filter((n) => BLOCK_OUTPUT.test(n));
  const others = names.filter((n) => !BLOCK_OUTPUT.test(n));
  const shown = 12;
  const otherText =
    others.length === 0
      ? ''
      : `${blocks.length > 0 ? ` and ${others.length} other layers` : ''}: ${others.slice(0, shown).join(', ')}${others.length > shown ? ', ...' : ''}`;
  const similar = names
    .filter((n) => n.toLowerCase().includes(given.toLowerCase()) || given.toLowerCase().includes(n.toLowerCase()))
    .slice(0, 5);
  return new ModelError(
    `${field} "${given}" is not a layer of ${what}. Valid layers: ${blocks.join(', ')}${otherText}.`,
    {
      hint:
        similar.length > 0
          ? `Did you mean ${similar.join(' or ')}?`
          : 'Run `xp check` to validate the experiment before training.',
    },
  );
}
