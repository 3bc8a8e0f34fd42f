// Pure edits of a Keras/tfjs topology JSON (model_config), done before building the model:
// list layer names, cut the graph at a layer, set the input size.
// Topologies can nest: Sequential > Sequential > Model, as Teachable Machine exports.

/** A layer of a Keras topology JSON (model_config), in the fields xp reads; tfjs reads the rest. */
export interface LayerJson {
  class_name: string;
  name?: string;
  /** A Sequential's config is {name, layers} (Keras >= 2.2.3) or a bare list of its layers (older Keras). */
  config: LayerConfigJson | LayerJson[];
  /** Each call of the layer: the calls feeding it. */
  inbound_nodes?: InboundEntry[][];
}

type Pair = number | number[];

/** The config fields xp reads or writes: a container's, an InputLayer's, a convolution's, a pooling's, a padding's. */
export interface LayerConfigJson {
  name?: string;
  layers?: LayerJson[];
  input_layers?: [string, number, number][];
  output_layers?: [string, number, number][];
  batch_input_shape?: (number | null)[];
  /** 'valid' or 'same' for a convolution or pooling; the pads (a number, or one per side) for ZeroPadding2D. */
  padding?: string | number | Pair[];
  kernel_size?: Pair;
  strides?: Pair;
  dilation_rate?: Pair;
  pool_size?: Pair;
  [key: string]: unknown;
}

/** A call feeding a layer: [layer name, node index, tensor index, kwargs] (Keras 2), or an object naming the layer. */
type InboundEntry = [string, ...unknown[]] | { name?: string; 0?: string };

const inboundName = (entry: InboundEntry | undefined): string | undefined =>
  Array.isArray(entry) ? entry[0] : (entry?.name ?? entry?.[0]);

const CONTAINERS = new Set(['Model', 'Functional', 'Sequential']);

export function isContainer(layer: LayerJson): boolean {
  return CONTAINERS.has(layer.class_name);
}

export function layerName(layer: LayerJson): string {
  return layer.name ?? (Array.isArray(layer.config) ? undefined : layer.config.name) ?? '';
}

// Sequential configs come as {name, layers} (Keras >= 2.2.3) or as a bare list (older Keras).
export function childLayers(container: LayerJson): LayerJson[] {
  const config = container.config;
  if (Array.isArray(config)) return config;
  return config.layers ?? [];
}

function withChildLayers(container: LayerJson, layers: LayerJson[]): LayerJson {
  if (Array.isArray(container.config)) return { ...container, config: layers };
  return { ...container, config: { ...container.config, layers } };
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

// The nested layers are taken as Keras wrote them: tfjs checks them when it builds the model.
const isLayerJson = (v: unknown): v is LayerJson =>
  isObject(v) && typeof v.class_name === 'string' && (Array.isArray(v.config) || isObject(v.config));

/** Unwraps `{model_config: ...}` / `{modelTopology: ...}` so the result is a layer-like container. */
export function modelConfigOf(topology: unknown): LayerJson {
  let t = topology;
  if (isObject(t) && t.modelTopology) t = t.modelTopology;
  if (isObject(t) && t.model_config) t = t.model_config;
  if (!isLayerJson(t) || !isContainer(t))
    throw new Error(
      `Expected a Keras model topology (Model, Functional or Sequential), got ${(isObject(t) && t.class_name) || typeof t}`,
    );
  return t;
}

/** Every layer name in graph order, descending into nested models; InputLayers left out. */
export function allLayerNames(container: LayerJson): string[] {
  const names: string[] = [];
  const seen = new Set<string>();
  const walk = (c: LayerJson) => {
    for (const layer of childLayers(c)) {
      if (isContainer(layer)) walk(layer);
      const name = layerName(layer);
      if (layer.class_name !== 'InputLayer' && !seen.has(name)) {
        seen.add(name);
        names.push(name);
      }
    }
  };
  walk(container);
  return names;
}

/** Indices from the outer container down to the layer called `name`, or undefined. */
export function findLayerPath(container: LayerJson, name: string): number[] | undefined {
  const layers = childLayers(container);
  for (let i = 0; i < layers.length; i++) {
    if (layerName(layers[i]) === name) return [i];
  }
  for (let i = 0; i < layers.length; i++) {
    if (!isContainer(layers[i])) continue;
    const inner = findLayerPath(layers[i], name);
    if (inner) return [i, ...inner];
  }
  return undefined;
}

// Layer names that feed `name` in a functional config, `name` included.
function ancestors(layers: LayerJson[], name: string): Set<string> {
  const byName = new Map(layers.map((l) => [layerName(l), l]));
  const keep = new Set<string>();
  const stack = [name];
  for (let current = stack.pop(); current !== undefined; current = stack.pop()) {
    if (keep.has(current)) continue;
    keep.add(current);
    for (const node of byName.get(current)?.inbound_nodes ?? []) {
      for (const inbound of node) {
        const from = inboundName(inbound);
        if (from !== undefined) stack.push(from);
      }
    }
  }
  return keep;
}

function isFunctional(container: LayerJson): boolean {
  return container.class_name !== 'Sequential';
}

/**
 * The container cut so that its output is the layer at `path`: functional graphs keep only the
 * ancestors of that layer, Sequentials drop the layers after it. Nested containers on the path
 * are cut the same way.
 */
export function cutAt(container: LayerJson, path: number[]): LayerJson {
  const layers = childLayers(container);
  const [index, ...rest] = path;
  const target = rest.length > 0 ? cutAt(layers[index], rest) : layers[index];
  const targetName = layerName(target);
  const replaced = layers.map((l, i) => (i === index ? target : l));
  if (!isFunctional(container)) return withChildLayers(container, replaced.slice(0, index + 1));
  const keep = ancestors(replaced, targetName);
  const cut = withChildLayers(
    container,
    replaced.filter((l) => keep.has(layerName(l))),
  );
  if (Array.isArray(cut.config)) return cut; // a bare list is a Sequential's: never functional
  cut.config.input_layers = (cut.config.input_layers ?? []).filter((i) => keep.has(i[0]));
  cut.config.output_layers = [[targetName, 0, 0]];
  return cut;
}

/** Sets [null, h, w, channels] on the input(s) of the container, recursing into a leading nested model. */
export function setInputSize(container: LayerJson, [h, w]: [number, number]): LayerJson {
  const resize = (layer: LayerJson): LayerJson => {
    if (Array.isArray(layer.config)) return layer;
    const shape = layer.config.batch_input_shape;
    const resized = shape?.length === 4 ? [null, h, w, shape[3]] : shape;
    return { ...layer, config: { ...layer.config, batch_input_shape: resized } };
  };
  const layers = childLayers(container).map((layer, i) => {
    if (layer.class_name === 'InputLayer') return resize(layer);
    if (i !== 0 || isFunctional(container)) return layer;
    // First layer of a Sequential: it carries the input shape, or it is a model that does.
    const resized = isContainer(layer) ? setInputSize(layer, [h, w]) : layer;
    return !Array.isArray(resized.config) && resized.config.batch_input_shape ? resize(resized) : resized;
  });
  return withChildLayers(container, layers);
}

// Spatial size after a conv/pool window, as Keras computes it; unknown stays unknown.
function windowOut(size: number | null, kernel: number, stride: number, padding: string, dilation = 1): number | null {
  if (size === null) return null;
  if (padding === 'same') return Math.ceil(size / stride);
  return Math.floor((size - ((kernel - 1) * dilation + 1)) / stride) + 1;
}

const pair = (v: Pair): [number, number] => (Array.isArray(v) ? [v[0], v[1] ?? v[0]] : [v, v]);
const inputSizeOf = (sizes: Map<string, [number, number]>, layer: LayerJson) => {
  const from = inboundName(layer.inbound_nodes?.[0]?.[0]);
  return from === undefined ? undefined : sizes.get(from);
};

/**
 * The spatial [h, w] a layer outputs for an input of [h, w] (channels_last), for the layer kinds of the Keras
 * applications: padding, convolutions, pooling; other kinds keep the size of their input.
 */
export function spatialOut<D extends number | null>(layer: LayerJson, [h, w]: [D, D]): [D, D] {
  const c: LayerConfigJson = Array.isArray(layer.config) ? {} : layer.config;
  const padding = typeof c.padding === 'string' ? c.padding : 'valid';
  switch (layer.class_name) {
    case 'ZeroPadding2D': {
      const p = c.padding;
      const pads = Array.isArray(p) ? p.map((x) => pair(x)) : typeof p === 'number' ? [pair(p), pair(p)] : [];
      const [[t, b], [l, r]] = pads.length === 2 ? pads : [pair(0), pair(0)];
      return [(h === null ? h : h + t + b) as D, (w === null ? w : w + l + r) as D];
    }
    case 'Conv2D':
    case 'DepthwiseConv2D':
    case 'SeparableConv2D': {
      const [kh, kw] = pair(c.kernel_size ?? 1);
      const [sh, sw] = pair(c.strides ?? 1);
      const [dh, dw] = pair(c.dilation_rate ?? 1);
      return [windowOut(h, kh, sh, padding, dh) as D, windowOut(w, kw, sw, padding, dw) as D];
    }
    case 'MaxPooling2D':
    case 'AveragePooling2D': {
      // Keras' defaults: a 2x2 window, strides the window's.
      const [kh, kw] = pair(c.pool_size ?? 2);
      const [sh, sw] = pair(c.strides ?? c.pool_size ?? 2);
      return [windowOut(h, kh, sh, padding) as D, windowOut(w, kw, sw, padding) as D];
    }
    default:
      return [h, w];
  }
}

/**
 * Spatial [h, w] of every layer output in a flat functional config (channels_last), for the
 * layer kinds of the Keras applications; unknown kinds keep the size of their first input.
 */
export function spatialSizes(container: LayerJson): Map<string, [number, number]> {
  const sizes = new Map<string, [number, number]>();
  for (const layer of childLayers(container)) {
    const name = layerName(layer);
    if (layer.class_name === 'InputLayer') {
      const [, h, w] = (Array.isArray(layer.config) ? undefined : layer.config.batch_input_shape) ?? [];
      if (typeof h === 'number' && typeof w === 'number') sizes.set(name, [h, w]);
      continue;
    }
    const input = inputSizeOf(sizes, layer);
    if (input) sizes.set(name, spatialOut(layer, input));
  }
  return sizes;
}

/** The topology the backbone is built from: cut so that `cut` is its output, sized for images of [h, w]. */
export function cutTopology(topology: LayerJson, cut: string, size: [number, number]): LayerJson | undefined {
  const at = findLayerPath(topology, cut);
  return at && fixMobileNetPads(setInputSize(cutAt(topology, at), size));
}

/**
 * MobileNetV2 pads before each stride-2 3x3 conv with imagenet_utils.correct_pad, which depends on
 * the input size: ((0,1),(0,1)) for even sizes, ((1,1),(1,1)) for odd ones. Exported topologies
 * hard-code the pads of their 224 input; recompute them for the size being built, in graph order
 * (a pad changes the sizes downstream).
 */
export function fixMobileNetPads(container: LayerJson): LayerJson {
  const isPad = (l: LayerJson) =>
    l.class_name === 'ZeroPadding2D' && /^(Conv1|block_\d+|expanded_conv)_pad$/.test(layerName(l));
  let current = withChildLayers(
    container,
    childLayers(container).map((l) => (isContainer(l) ? fixMobileNetPads(l) : l)),
  );
  for (const pad of childLayers(container).filter(isPad)) {
    const name = layerName(pad);
    const sizes = spatialSizes(current);
    const input = inputSizeOf(sizes, pad);
    if (!input) continue;
    const fix = (s: number) => (s % 2 === 0 ? [0, 1] : [1, 1]);
    const padding = [fix(input[0]), fix(input[1])];
    current = withChildLayers(
      current,
      childLayers(current).map((l) =>
        layerName(l) === name && !Array.isArray(l.config) ? { ...l, config: { ...l.config, padding } } : l,
      ),
    );
  }
  return current;
}
