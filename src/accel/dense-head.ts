// The native policy's head trainer. For a head on frozen features whose first Dense layer is large (the
// reference: 37632 x 1024), the step skips that layer's kernel gradient: the backward pass stops at the layer's
// output (dz), and the optimizer updates the kernel from x and dz in one pass (KerasRMSprop.applyDenseGradient).
// The math is trainOnBatch's: same loss and metric functions, same layers in training mode, same optimizer; only
// the order of float additions in the kernel gradient differs, and for the usual heads the layers after the
// large Dense are differentiated in closed form (tail.ts) rather than under a tape. Predictions of such a head
// multiply its mostly-zero features by the kernel skipping the zeros (native-ops.ts). Any other model keeps
// the reference trainer's trainOnBatch and predict.
import * as tf from '@tensorflow/tfjs-node';
import type { HeadTrainer } from './head-trainer.ts';
import { sparseMatMul } from './native-ops.ts';
import { KerasRMSprop } from './rmsprop.ts';
import { tailBackprop } from './tail.ts';
import { compiledInternals, denseInternals } from './tfjs-internals.ts';
import { FUSED_MIN_SIZE } from './xla-update.ts';

// Below this share of nonzero features the sparse product is the faster one (backbone features after a ReLU are
// mostly zeros); the first rows of a batch tell, because counting them all costs more than the product.
const SPARSE_BELOW = 0.5;
const SAMPLE_ROWS = 32;

/** The model as pooling -> large Dense -> rest, when it is one; callers hold the native policy. */
function denseHead(model: tf.LayersModel) {
  const layers = chain(model);
  const d = layers?.findIndex((l) => l.getClassName() === 'Dense') ?? -1;
  if (!layers || d < 0 || layers.slice(0, d).some((l) => l.weights.length > 0)) return undefined; // pooling only before it
  const dense = denseInternals(layers[d]);
  const kernel = dense.kernel.read();
  if (!dense.kernel.trainable || kernel.size < FUSED_MIN_SIZE || dense.kernelRegularizer || dense.kernelConstraint)
    return undefined;
  const compiled = compiledInternals(model);
  if (compiled.lossFunctions?.length !== 1 || model.outputs.length !== 1) return undefined;
  const before = layers.slice(0, d);
  const after = layers.slice(d + 1);
  const flatten = (x: tf.Tensor) =>
    before.reduce((h, l) => l.apply(h, { training: true }) as tf.Tensor, x) as tf.Tensor2D;
  const matMul = (x: tf.Tensor2D) =>
    tf.tidy(() => {
      const sample = x.shape[0] > SAMPLE_ROWS ? tf.slice(x, 0, SAMPLE_ROWS) : x;
      const sparse = tf.mean(tf.notEqual(sample, 0).toFloat()).dataSync()[0] < SPARSE_BELOW;
      return sparse ? sparseMatMul(x, dense.kernel.read()) : tf.matMul(x, dense.kernel.read());
    });
  return { dense, after, flatten, matMul, compiled };
}

/** Predictions of a dense head in inference mode, as model.predict gives them; undefined for other models. */
export function densePredictor(model: tf.LayersModel): ((x: tf.Tensor) => tf.Tensor) | undefined {
  const head = denseHead(model);
  if (!head) return undefined;
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

export type DenseHeadStep = Pick<HeadTrainer, 'step' | 'dispose'> & { backprop: 'written-out' | 'tape' };

/** The one-pass step of a dense head trained with KerasRMSprop; undefined for other models and optimizers. */
export function denseHeadStep(model: tf.LayersModel): DenseHeadStep | undefined {
  // Not instanceof: tfjs' Optimizer answers it for any object with minimize and applyGradients.
  const head = model.optimizer?.constructor === KerasRMSprop ? denseHead(model) : undefined;
  if (!head) return undefined;
  const optimizer = model.optimizer as KerasRMSprop;
  const { dense, after, flatten, matMul, compiled } = head;
  const others = () =>
    model.trainableWeights.map((w) => w.read() as tf.Variable).filter((v) => v !== dense.kernel.read());
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
      return compiled
        .calculateLosses()
        .reduce((total, r) => tf.add(total, r), tf.mean(compiled.lossFunctions[0](y, out))) as tf.Scalar;
    };
    const { value, grads } = tf.engine().gradients(totalLoss, [z, ...variables]);
    return {
      loss: value,
      metrics,
      dz: grads[0],
      grads: variables.map((v, i) => ({ name: v.name, tensor: grads[i + 1] })),
    };
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
      const { zNext } = optimizer.applyDenseGradient(dense.kernel.read().name, input, dz, next && flatten(next));
      if (zNext && next) prepared = { x: next, kernel: kernelData(), z: tf.keep(zNext) };
      return [loss, ...metrics];
    });
    ready?.dispose();
    const numbers = values.map((v) => v.dataSync()[0]);
    tf.dispose(values);
    return numbers;
  };
  return {
    step,
    dispose: () => {
      prepared?.z.dispose();
      prepared = undefined;
    },
    backprop: tail ? 'written-out' : 'tape',
  };
}

/** The model's layers after its input when they form a chain (each feeds only the next), else undefined. */
function chain(model: tf.LayersModel): tf.layers.Layer[] | undefined {
  const [input, ...rest] = model.layers;
  if (input?.getClassName() !== 'InputLayer') return undefined;
  let previous = input;
  for (const layer of rest) {
    const nodes = layer.inboundNodes;
    // Node 0 is where the head was built; composing it with the backbone for saving adds another.
    if (nodes[0]?.inboundLayers.length !== 1 || nodes[0].inboundLayers[0] !== previous) return undefined;
    previous = layer;
  }
  return previous === model.outputs[0].sourceLayer ? rest : undefined;
}
