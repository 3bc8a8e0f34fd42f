// The graph an export writes: a run's saved model (a model of nested models: the cut backbone, then the head) as
// one flat functional model whose first layer is the run's preprocessing. Flat, because Keras 3 counts a nested
// model's calls from 0 where tfjs-layers (as Keras 2) counts from 1, so a nested tfjs topology does not load in
// Keras; and because a user of the exported model addresses the backbone's layers by name (fine-tuning from one).
// Works on the topology JSON alone: weights keep their names (`<layer>/<variable>`), so they need no change.
import type { ResolvedPreprocessing } from '../model/backbone.ts';
import { ModelError } from '../errors.ts';

/** A layer of a functional topology as tfjs-layers and Keras 2 write it. */
export interface LayerJson {
  name: string;
  class_name: string;
  config: Record<string, unknown>;
  inbound_nodes: InboundNode[];
}
type Ref = [string, number, number];
type InboundNode = [string, number, number, Record<string, unknown>?][];
interface FunctionalConfig {
  name: string;
  layers: LayerJson[];
  input_layers: Ref[];
  output_layers: Ref[];
}
export interface ModelTopology {
  class_name: string;
  config: FunctionalConfig;
  keras_version?: string;
  backend?: string;
}

const NESTED = new Set(['Model', 'Functional']);
export const PREPROCESSING_LAYER = 'xp_preprocessing';

/** Keras' Rescaling for the run's preprocessing (input 0..255): rescale x/255, inception x/127.5 - 1. */
function rescaling(mode: ResolvedPreprocessing): { scale: number; offset: number } | undefined {
  if (mode === 'rescale') return { scale: 1 / 255, offset: 0 };
  if (mode === 'inception') return { scale: 1 / 127.5, offset: -1 };
  return undefined;
}

/**
 * The saved model as one flat graph: images (0..255) in, the preprocessing as a Rescaling layer, every layer of the
 * nested models in order, the head's probabilities out.
 */
export function selfContained(saved: ModelTopology, preprocessing: ResolvedPreprocessing): ModelTopology {
  const topology = saved.class_name === 'Sequential' ? functional(saved) : saved;
  const root = topology.config;
  if (!NESTED.has(topology.class_name) || !Array.isArray(root?.layers))
    throw new ModelError(`the saved model is a ${topology.class_name}, not a functional model`);
  // Where each (layer, node, tensor) of a nested model now comes from in the flat graph.
  const alias = new Map<string, Ref>();
  const key = (r: Ref) => `${r[0]}\u0000${r[1]}\u0000${r[2]}`;
  const resolve = (r: Ref): Ref => alias.get(key(r)) ?? r;
  const layers: LayerJson[] = [];
  const relink = (layer: LayerJson): LayerJson => ({
    ...layer,
    inbound_nodes: layer.inbound_nodes.map((node) =>
      node.map(([name, n, t, kwargs]) => [...resolve([name, n, t]), kwargs ?? {}] as InboundNode[number]),
    ),
  });
  const inline = (config: FunctionalConfig, calledWith: Ref[] | undefined, outerName: string | undefined) => {
    const inputs = new Set(config.input_layers.map((r) => r[0]));
    if (calledWith) for (const [i, r] of config.input_layers.entries()) alias.set(key(r), resolve(calledWith[i]));
    for (const layer of config.layers) {
      if (NESTED.has(layer.class_name)) {
        if (layer.inbound_nodes.length !== 1)
          throw new ModelError(`the nested model ${layer.name} is called ${layer.inbound_nodes.length} times`);
        const called = layer.inbound_nodes[0].map(([name, n, t]) => [name, n, t] as Ref);
        inline(layer.config as unknown as FunctionalConfig, called, layer.name);
        continue;
      }
      if (calledWith && inputs.has(layer.name)) continue; // a nested model's input is what it was called with
      if (layers.some((l) => l.name === layer.name))
        throw new ModelError(`two layers are named ${layer.name}: the model cannot be flattened`);
      layers.push(relink(layer));
    }
    // A nested model's outputs, as the layers after it refer to them: (model, its call, output k). tfjs-layers
    // numbers a nested model's first call 1 (node 0 is the model's own inputs).
    if (outerName)
      config.output_layers.forEach((r, k) => {
        const to = resolve(r);
        for (const node of [0, 1]) alias.set(key([outerName, node, k]), to);
      });
  };
  inline(root, undefined, undefined);

  const scaling = rescaling(preprocessing);
  if (scaling) {
    const [input] = root.input_layers;
    for (const layer of layers)
      for (const node of layer.inbound_nodes)
        for (const ref of node) if (ref[0] === input[0]) ref[0] = PREPROCESSING_LAYER;
    const at = layers.findIndex((l) => l.name === input[0]) + 1;
    layers.splice(at, 0, {
      name: PREPROCESSING_LAYER,
      class_name: 'Rescaling',
      config: { name: PREPROCESSING_LAYER, trainable: false, dtype: 'float32', ...scaling },
      inbound_nodes: [[[input[0], input[1], input[2], {}]]],
    });
  }
  return {
    class_name: 'Model',
    config: {
      name: root.name,
      layers,
      input_layers: root.input_layers,
      output_layers: root.output_layers.map(resolve),
    },
    keras_version: topology.keras_version,
    backend: topology.backend,
  };
}

/** A Sequential model as the functional model it is: an input layer, then each layer called on the one before. */
function functional(sequential: ModelTopology): ModelTopology {
  const config = sequential.config as unknown as { name: string; layers: LayerJson[] };
  const [first] = config.layers;
  const { batch_input_shape: shape, ...firstConfig } = first.config;
  const input: LayerJson = {
    name: 'input',
    class_name: 'InputLayer',
    config: { batch_input_shape: shape, dtype: 'float32', sparse: false, name: 'input' },
    inbound_nodes: [],
  };
  const layers = config.layers.map((layer, i) => ({
    ...layer,
    name: layer.name ?? (layer.config.name as string),
    config: i === 0 ? firstConfig : layer.config,
    inbound_nodes: [[[i === 0 ? 'input' : (config.layers[i - 1].name ?? config.layers[i - 1].config.name), 0, 0, {}]]],
  })) as LayerJson[];
  return {
    ...sequential,
    class_name: 'Model',
    config: {
      name: config.name,
      layers: [input, ...layers],
      input_layers: [['input', 0, 0]],
      output_layers: [[layers[layers.length - 1].name, 0, 0]],
    },
  };
}

/** Every layer class of a topology, nested models' included, by how many layers have it. */
export function layerClasses(topology: ModelTopology): Map<string, string[]> {
  const classes = new Map<string, string[]>();
  const walk = (config: FunctionalConfig) => {
    for (const layer of config.layers) {
      if (NESTED.has(layer.class_name)) walk(layer.config as unknown as FunctionalConfig);
      else classes.set(layer.class_name, [...(classes.get(layer.class_name) ?? []), layer.name]);
    }
  };
  walk(topology.config);
  return classes;
}
