// The checks every command runs on an experiment before doing any work: `xp check` and `xp run` both call
// `preflight`, so run can find no config error that check does not. It hands config the model package's way of
// reading layer names and sizes (topologies only; Keras .h5 files are opened to see that they hold weights) and
// the data package's folder scan; no TensorFlow is loaded and no image decoded.
import type { BackboneRef, DataFacts, LayerFacts } from '../config/cross-checks.ts';
import { loadExperiment, type LoadedExperiment } from '../config/load.ts';
import type { Experiment } from '../config/types.ts';
import { sandboxCheck, type SandboxOptions } from './sandbox.ts';
import { inspectBackboneWeights, KERAS_TOP, kerasArchitecture, unknownLayerError } from '../model/layers.ts';
import { inspectTfjsModel } from '../model/tfjs-model.ts';
import { localWeights } from '../model/remote-weights.ts';
import { allLayerNames, cutAt, cutTopology, findLayerPath, type LayerJson } from '../model/topology.ts';
import { expectedWeights, firstEmptyOutput, weightsMismatch } from '../model/weight-shapes.ts';

export interface PreflightOptions {
  set?: string[];
  sweep?: string[];
  maxTrials?: number;
  /** Fetch remote files (the experiment, its bases, weights) again instead of using the cache. */
  reload?: boolean;
  /** Where data sets given by url are unpacked (--data-dir; default XP_DATA_DIR): one there already is checked too. */
  dataDir?: string;
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
    data: dataFacts(opts.dataDir ?? opts.sandbox?.dataDir),
  });
}

/** The data package's own scan of both folders, the one training runs before decoding. */
function dataFacts(dataDir: string | undefined): DataFacts {
  // Each data section is scanned once, for its problems and its classes.
  const scans = new Map<string, ReturnType<typeof scan>>();
  const scan = async (data: Experiment['data']) => {
    const { scanSplits } = await import('../data/splits.ts');
    let dirs = { train: data.train, validation: data.validation };
    if (data.url) {
      const { unpackedDataset } = await import('../data/dataset.ts');
      const unpacked = await unpackedDataset(data, { dataDir });
      if (!unpacked) return undefined;
      dirs = { train: unpacked.trainDir, validation: unpacked.validationDir };
    }
    return scanSplits(dirs, data);
  };
  const scanned = (data: Experiment['data']) => {
    const key = JSON.stringify(data);
    let s = scans.get(key);
    if (!s) {
      s = scan(data);
      scans.set(key, s);
    }
    return s;
  };
  return {
    async classFolders(data) {
      const s = await scanned(data);
      return (s?.problems ?? []).map((p) => ({ field: p.field, message: sentence(p.error) }));
    },
    async classNames(data) {
      const s = await scanned(data);
      return s && !s.problems ? s.splits.classNames : undefined;
    },
  };
}

const sentence = (error: Error & { hint?: string }) => {
  const message = error.message.replace(/\.$/, '');
  if (!error.hint) return message;
  return `${message}${/[?!]$/.test(message) ? ' ' : '. '}${error.hint[0].toUpperCase()}${error.hint.slice(1)}`;
};

/** Layer names from src/model, each weights file read at most once per call. */
export function modelLayerFacts(opts: { reload?: boolean } = {}): LayerFacts {
  const models = new Map<string, Promise<ReadModel>>();
  const modelOf = (b: BackboneRef) => {
    const key = `${b.name}|${b.weights}|${b.cut_layer}`;
    let model = models.get(key);
    if (!model) {
      model = localWeights(b.weights, opts).then((weights) => readModel({ ...b, weights }));
      models.set(key, model);
    }
    return model;
  };
  return {
    async layerNames(backbone, cut) {
      const { topology } = await modelOf(backbone);
      if (cut === undefined) return allLayerNames(topology);
      const at = findLayerPath(topology, cut);
      return at ? allLayerNames(cutAt(topology, at)) : [];
    },
    unknownLayer: (field, given, names, what) => unknownLayerError(field, given, names, what).message,
    // The sizes the backbone would build with, as src/model builds it, nested models included.
    async emptyOutput(backbone, cut, size) {
      const { topology } = await modelOf(backbone);
      const sized = cutTopology(topology, cut, size);
      return sized && firstEmptyOutput(sized);
    },
    // A model.json's weights against the layers of the cut backbone, with the check loading makes.
    async weightsMismatch(backbone, cut, size) {
      const { topology, file, manifest } = await modelOf(backbone);
      const sized = manifest && cutTopology(topology, cut, size);
      if (!manifest || !sized) return undefined;
      const problem = weightsMismatch(expectedWeights(sized), (name) => manifest.get(name), file);
      return problem && sentence(problem);
    },
  };
}

interface ReadModel {
  topology: LayerJson;
  /** The weights file, local (a URL's cached download). */
  file: string;
  /** A model.json's weight shapes by name (the other files' are checked as they are read). */
  manifest?: Map<string, number[]>;
}

// Weights files (a URL's cached download) are inspected, not loaded (a model.json's manifest and shards, a .h5's structure and shapes):
// a bad file fails here, before any image is decoded, with the ModelError that loading it would give.
async function readModel(b: BackboneRef): Promise<ReadModel> {
  if (/\.json$/i.test(b.weights)) {
    const model = await inspectTfjsModel(b.weights);
    const manifest = new Map(model.groups.flatMap((g) => g.weights).map((w) => [w.name, w.shape]));
    return { topology: model.topology, file: b.weights, manifest };
  }
  if (/\.h5$/i.test(b.weights))
    await inspectBackboneWeights({ name: b.name, weights: b.weights, cut_layer: b.cut_layer ?? KERAS_TOP[b.name] });
  return { topology: kerasArchitecture(b.name), file: b.weights };
}
