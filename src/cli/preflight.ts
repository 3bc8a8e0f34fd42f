// The checks every command runs on an experiment before doing any work: `xp check` and `xp run` both call
// `preflight`, so run can find no config error that check does not. It hands config the model package's way
// of reading layer names (topologies only; Keras .h5 files are opened to see that they hold weights).
import type { BackboneRef, LayerFacts } from '../config/cross-checks.ts';
import { loadExperiment, type LoadedExperiment } from '../config/load.ts';
import { inspectBackboneWeights, KERAS_TOP, kerasArchitecture, unknownLayerError } from '../model/layers.ts';
import { inspectTfjsModel } from '../model/tfjs-model.ts';
import { allLayerNames, cutAt, findLayerPath, type LayerJson } from '../model/topology.ts';

export interface PreflightOptions {
  set?: string[];
  sweep?: string[];
  maxTrials?: number;
}

export function preflight(file: string, opts: PreflightOptions = {}): Promise<LoadedExperiment> {
  return loadExperiment(file, { set: opts.set, sweep: opts.sweep, maxTrials: opts.maxTrials, layers: modelLayerFacts() });
}

/** Layer names from src/model, each weights file read at most once per call. */
export function modelLayerFacts(): LayerFacts {
  const topologies = new Map<string, Promise<LayerJson>>();
  const topologyOf = (b: BackboneRef) => {
    const key = `${b.name}|${b.weights}|${b.cut_layer}`;
    if (!topologies.has(key)) topologies.set(key, readTopology(b));
    return topologies.get(key)!;
  };
  return {
    async layerNames(backbone, cut) {
      const t = await topologyOf(backbone);
      if (cut === undefined) return allLayerNames(t);
      const at = findLayerPath(t, cut);
      return at ? allLayerNames(cutAt(t, at)) : [];
    },
    unknownLayer: (field, given, names, what) => unknownLayerError(field, given, names, what).message,
  };
}

// Weights files are inspected, not loaded (a model.json's manifest and shards, a .h5's structure and shapes):
// a bad file fails here, before any image is decoded, with the ModelError that loading it would give.
async function readTopology(b: BackboneRef): Promise<LayerJson> {
  if (/\.json$/i.test(b.weights)) return (await inspectTfjsModel(b.weights)).topology;
  if (/\.h5$/i.test(b.weights)) await inspectBackboneWeights({ name: b.name, weights: b.weights, cut_layer: b.cut_layer ?? KERAS_TOP[b.name] });
  return kerasArchitecture(b.name);
}
