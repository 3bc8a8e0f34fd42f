// The checks every command runs on an experiment before doing any work: `xp check` and `xp run` both call
// `preflight`, so run can find no config error that check does not. It hands config the model package's way of
// reading layer names and sizes (topologies only; Keras .h5 files are opened to see that they hold weights) and
// the data package's folder scan; no TensorFlow is loaded and no image decoded.
import type { BackboneRef, DataFacts, LayerFacts } from '../config/cross-checks.ts';
import { loadExperiment, type LoadedExperiment } from '../config/load.ts';
import { sandboxCheck, type SandboxOptions } from './sandbox.ts';
import { inspectBackboneWeights, KERAS_TOP, kerasArchitecture, unknownLayerError } from '../model/layers.ts';
import { inspectTfjsModel } from '../model/tfjs-model.ts';
import { localWeights } from '../model/remote-weights.ts';
import {
  allLayerNames,
  cutAt,
  findLayerPath,
  fixMobileNetPads,
  setInputSize,
  spatialSizes,
  type LayerJson,
} from '../model/topology.ts';

export interface PreflightOptions {
  set?: string[];
  sweep?: string[];
  maxTrials?: number;
  /** Fetch remote files (the experiment, its bases, weights) again instead of using the cache. */
  reload?: boolean;
  /** What a file from the web may do (Deno's flags); checked before anything it names is read or contacted. */
  sandbox?: SandboxOptions;
}

export function preflight(file: string, opts: PreflightOptions = {}): Promise<LoadedExperiment> {
  const permit = opts.sandbox && sandboxCheck(opts.sandbox);
  return loadExperiment(file, {
    set: opts.set,
    sweep: opts.sweep,
    maxTrials: opts.maxTrials,
    reload: opts.reload,
    permit,
    layers: modelLayerFacts(opts),
    data: dataFacts,
  });
}

/** The data package's own folder scan and class comparison, as training runs them before decoding. */
const dataFacts: DataFacts = {
  async classFolders(train, validation) {
    const { scanClasses, checkSameClasses } = await import('../data/scan.ts');
    const scanned = await Promise.all(
      [scanClasses(train), scanClasses(validation)].map((p) => p.catch((error: Error) => error)),
    );
    const problems = (['train', 'validation'] as const).flatMap((field, i) =>
      scanned[i] instanceof Error ? [{ field, message: sentence(scanned[i]) }] : [],
    );
    if (problems.length) return problems;
    try {
      checkSameClasses(
        scanned[0] as Exclude<(typeof scanned)[0], Error>,
        scanned[1] as Exclude<(typeof scanned)[1], Error>,
      );
    } catch (error) {
      return [{ field: 'validation', message: sentence(error as Error) }];
    }
    return [];
  },
};

const sentence = (error: Error & { hint?: string }) => `${error.message}${error.hint ? `. ${error.hint}` : ''}`;

/** Layer names from src/model, each weights file read at most once per call. */
export function modelLayerFacts(opts: { reload?: boolean } = {}): LayerFacts {
  const topologies = new Map<string, Promise<LayerJson>>();
  const topologyOf = (b: BackboneRef) => {
    const key = `${b.name}|${b.weights}|${b.cut_layer}`;
    let topology = topologies.get(key);
    if (!topology) {
      topology = localWeights(b.weights, opts).then((weights) => readTopology({ ...b, weights }));
      topologies.set(key, topology);
    }
    return topology;
  };
  return {
    async layerNames(backbone, cut) {
      const t = await topologyOf(backbone);
      if (cut === undefined) return allLayerNames(t);
      const at = findLayerPath(t, cut);
      return at ? allLayerNames(cutAt(t, at)) : [];
    },
    unknownLayer: (field, given, names, what) => unknownLayerError(field, given, names, what).message,
    // The sizes the backbone would build with, as src/model builds it (nested topologies are not sized here).
    async emptyOutput(backbone, cut, size) {
      const t = await topologyOf(backbone);
      const at = findLayerPath(t, cut);
      if (!at || at.length > 1) return undefined;
      for (const [layer, [h, w]] of spatialSizes(fixMobileNetPads(setInputSize(cutAt(t, at), size)))) {
        if (h <= 0 || w <= 0) return { layer, size: [h, w] };
      }
      return undefined;
    },
  };
}

// Weights files (a URL's cached download) are inspected, not loaded (a model.json's manifest and shards, a .h5's structure and shapes):
// a bad file fails here, before any image is decoded, with the ModelError that loading it would give.
async function readTopology(b: BackboneRef): Promise<LayerJson> {
  if (/\.json$/i.test(b.weights)) return (await inspectTfjsModel(b.weights)).topology;
  if (/\.h5$/i.test(b.weights))
    await inspectBackboneWeights({ name: b.name, weights: b.weights, cut_layer: b.cut_layer ?? KERAS_TOP[b.name] });
  return kerasArchitecture(b.name);
}
