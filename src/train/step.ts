// One training step of a compiled model on a batch: [loss, ...metrics], as trainOnBatch returns them; and its
// predictions. For a head on frozen features whose first Dense layer is large (the reference: 37632 x 1024),
// the step skips that layer's kernel gradient: the backward pass stops at the layer's output (dz), and the
// optimizer updates the kernel from x and dz in one pass (KerasRMSprop.applyDenseGradient). The math is
// trainOnBatch's: same loss and metric functions, same layers in training mode, same optimizer; only the order
// of float additions in the kernel gradient differs, and for the usual heads the layers after the large Dense are
// differentiated in closed form (tail.ts) rather than under a tape. Predictions of such a head multiply its mostly-zero
// features by the kernel skipping the zeros (native-ops.ts). Any other model, or without the native kernels,
// takes trainOnBatch and predict.
import * as tf from '@tensorflow/tfjs-node';
import { nativeOps, sparseMatMul } from '../model/native-ops.ts';
import { KerasRMSprop } from '../model/rmsprop.ts';
import { FUSED_MIN_SIZE } from '../model/xla-update.ts';
import { tailBackprop, type CompiledInternals, type DenseInternals } from './tail.ts';

export interface TrainStep {
  /** `next`: the next batch's input when it is already known, for the one-pass step to prepare its matmul. */
  (x: tf.Tensor, y: tf.Tensor, next?: tf.Tensor): Promise<number[]>;
  /** Frees what the step prepared for a next batch that did not come (an interrupted epoch). */
  dispose(): void;
  /** 'dense-head' when the first Dense kernel is updated in one pass, else 'trainOnBatch'. */
  kind: 'dense-head' | 'trainOnBatch';
  /** For a dense head: the layers after the large Dense through tail.ts, or under a gradient tape. */
  backprop?: 'written-out' | 'tape';
}

export function trainStep(model: tf.LayersModel): TrainStep {
  const fused = denseHeadStep(model);
  if (fused) return Object.assign(fused.step, { kind: 'dense-head' as const, dispose: fused.dispose, backprop: fused.backprop });
  const step = async (x: tf.Tensor, y: tf.Tensor) => [(await model.trainOnBatch(x, y)) as number[]].flat();
  return Object.assign(step, { kind: 'trainOnBatch' as const, dispose: () => {} });
}

/** The model as pooling -> large Dense -> rest, when it is one (and the native kernels are loaded). */
function denseHead(model: tf.LayersModel) {
  if (!nativeOps()) return undefined;
  const layers = chain(model);
  const d = layers?.findIndex((l) => l.getClassName() === 'Dense') ?? -1;
  if (!layers || d < 0 || layers.slice(0, d).some((l) => l.weights.length > 0)) return undefined; // pooling only before it
  const dense = layers[d] as unknown as DenseInternals;
  const kernel = dense.kernel.read();
  if (!dense.kernel.trainable || kernel.size < FUSED_MIN_SIZE || dense.kernelRegularizer || dense.kernelConstraint) return undefined;
  const compiled = model as unknown as CompiledInternals;
  if (compiled.lossFunctions?.length !== 1 || model.outputs.length !== 1) return undefined;
  const before = layers.slice(0, d);
  const after = layers.slice(d + 1);
  const flatten = (x: tf.Tensor) => before.reduce((h, l) => l.apply(h, { training: true }) as tf.Tensor, x) as tf.Tensor2D;
  // x W for flattened features; skipping zeros pays off when most are zero (84-92% at InceptionV3's mixed7).
  // The first rows tell (counting all of 1000 rows of features took longer than the product).
  const matMul = (x: tf.Tensor2D) =>
    tf.tidy(() => {
      const sample = x.shape[0] > 32 ? tf.slice(x, 0, 32) : x;
      const sparse = tf.mean(tf.notEqual(sample, 0).toFloat()).dataSync()[0] < 0.5;
      return sparse ? sparseMatMul(x, dense.kernel.read()) : tf.matMul(x, dense.kernel.read());
    });
  return { dense, after, flatten, matMul, compiled };
}

/** Predictions of a model in inference mode, as model.predict gives them. */
export function predictor(model: tf.LayersModel): (x: tf.Tensor) => tf.Tensor {
  const head = denseHead(model);
  if (!head) return (x) => model.predict(x) as tf.Tensor;
  const { dense, after, flatten, matMul } = head;
  return (x) =>
    tf.tidy(() => {
      let out: tf.Tensor = matMul(flatten(x));
      if (dense.bias) out = tf.add(out, dense.bias.read());
      out = dense.activation.apply(out);
      for (const l of after) out = l.apply(out, { training: false }) as tf.Tensor;
      return out;
    });
}

function denseHeadStep(
  model: tf.LayersModel,
): { step: (x: tf.Tensor, y: tf.Tensor, next?: tf.Tensor) => Promise<number[]>; dispose: () => void; backprop: 'written-out' | 'tape' } | undefined {
  // Not instanceof: tfjs' Optimizer answers it for any object with minimize and applyGradients.
  const head = model.optimizer?.constructor === KerasRMSprop ? denseHead(model) : undefined;
  if (!head) return undefined;
  const optimizer = model.optimizer as KerasRMSprop;
  const { dense, after, flatten, matMul, compiled } = head;
  const others = () => model.trainableWeights.map((w) => w.read() as tf.Variable).filter((v) => v !== dense.kernel.read());
  const tail = tailBackprop(dense, after, compiled);

  // The loss, metrics, kernel output gradient and other variables' gradients: written out, or from a tape.
  const backward = (z: tf.Tensor, y: tf.Tensor) => {
    if (tail) return tail(z, y);
    const metrics: tf.Scalar[] = [];
    const variables = others();
    const totalLoss = () => {
      let out = dense.bias ? tf.add(z, dense.bias.read()) : z;
      out = dense.activation.apply(out);
      for (const l of after) out = l.apply(out, { training: true }) as tf.Tensor;
      for (const [metric] of compiled.metricsTensors) metrics.push(tf.keep(tf.mean(metric(y, out))));
      return compiled.calculateLosses().reduce((total, r) => tf.add(total, r), tf.mean(compiled.lossFunctions[0](y, out))) as tf.Scalar;
    };
    const { value, grads } = tf.engine().gradients(totalLoss, [z, ...variables]);
    return { loss: value, metrics, dz: grads[0], grads: variables.map((v, i) => ({ name: v.name, tensor: grads[i + 1] })) };
  };

  // The update computes the next batch's x W with the new kernel; valid while the input and kernel are those.
  let prepared: { x: tf.Tensor; kernel: object; z: tf.Tensor } | undefined;
  const kernelData = () => dense.kernel.read().dataId; // a Variable keeps its identity; assign changes its data

  const step = async (x: tf.Tensor, y: tf.Tensor, next?: tf.Tensor) => {
    const ready = prepared?.x === x && prepared.kernel === kernelData() ? prepared.z : undefined;
    if (prepared && !ready) prepared.z.dispose();
    prepared = undefined;
    const values = tf.tidy(() => {
      const input = flatten(x);
      const z = ready ?? matMul(input); // outside any tape: no kernel gradient is recorded
      const { loss, metrics, dz, grads } = backward(z, y);
      optimizer.applyGradients(grads);
      const updated = optimizer.applyDenseGradient(dense.kernel.read().name, input, dz, next && flatten(next));
      if (!updated) throw new Error('xp: the native dense update became unavailable');
      if (updated.zNext) prepared = { x: next!, kernel: kernelData(), z: tf.keep(updated.zNext) };
      return [loss, ...metrics];
    });
    ready?.dispose();
    const numbers = values.map((v) => v.dataSync()[0]);
    tf.dispose(values);
    return numbers;
  };
  return { step, dispose: () => (prepared?.z.dispose(), (prepared = undefined)), backprop: tail ? 'written-out' : 'tape' };
}

/** The model's layers after its input when they form a chain (each feeds only the next), else undefined. */
function chain(model: tf.LayersModel): tf.layers.Layer[] | undefined {
  const [input, ...rest] = model.layers;
  if (!input || input.getClassName() !== 'InputLayer') return undefined;
  let previous = input;
  for (const layer of rest) {
    const nodes = (layer as unknown as { inboundNodes: { inboundLayers: tf.layers.Layer[] }[] }).inboundNodes;
    // Node 0 is where the head was built; composing it with the backbone for saving adds another.
    if (nodes[0]?.inboundLayers.length !== 1 || nodes[0].inboundLayers[0] !== previous) return undefined;
    previous = layer;
  }
  return previous === model.outputs[0].sourceLayer ? rest : undefined;
}
