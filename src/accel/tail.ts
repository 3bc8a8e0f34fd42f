// The small layers after a head's large Dense, forward and backward written out. Under a gradient tape these
// few small tensors cost several times more TensorFlow calls per step (loss, clipping, dropout, Dense layers and
// their gradients), each with a fixed dispatch cost that adds up to a sizeable share of the head's step. It covers
// what xp heads are made of: Dense layers (relu, linear, sigmoid or tanh; sigmoid or softmax last), Dropout, and
// the two losses lossFor picks, with nothing that adds losses of its own (regularizers). For anything else
// `tailBackprop` returns undefined and the step keeps the tape.
//
// The values are the model's: its loss and metric functions on its own layers' outputs (dropout masks from the
// layers themselves, so the same seeds give the same masks). The gradients are the closed forms of the tape's:
// for sigmoid + binary cross-entropy and softmax + categorical cross-entropy, d loss / d logits = (p - y) / n
// where the loss's clipping of p to [eps, 1 - eps] lets a gradient through, else 0.
import * as tf from '@tensorflow/tfjs-node';
import {
  activationName as activationOf,
  denseInternals,
  noiseShape,
  type CompiledInternals,
  type DenseInternals,
} from './tfjs-internals.ts';

export interface TailStep {
  loss: tf.Scalar;
  metrics: tf.Scalar[];
  /** The loss gradient at the large Dense's output, before its bias. */
  dz: tf.Tensor;
  /** Gradients of every other trainable variable (the large Dense's bias, the layers after it). */
  grads: { name: string; tensor: tf.Tensor }[];
}

type Activation = 'relu' | 'linear' | 'sigmoid' | 'tanh';
const HIDDEN = new Set(['relu', 'linear', 'sigmoid', 'tanh']);

// d output / d input of an activation, from its output.
const slope: Record<Activation, (h: tf.Tensor) => tf.Tensor | undefined> = {
  relu: (h) => tf.cast(tf.greater(h, 0), 'float32'),
  linear: () => undefined,
  sigmoid: (h) => tf.mul(h, tf.sub(1, h)),
  tanh: (h) => tf.sub(1, tf.square(h)),
};

type Entry = { dropout: tf.layers.Layer } | { dense: DenseInternals; activation: string };
/** What the forward pass keeps of an entry for the backward pass: its input, and its mask or its output. */
type Saved = { input: tf.Tensor } & (
  | { mask: tf.Tensor }
  | { dense: DenseInternals; activation: string; output: tf.Tensor }
);

/** z (the large Dense's output, before its bias) and targets -> loss, metrics and gradients; or undefined. */
export function tailBackprop(
  first: DenseInternals,
  after: tf.layers.Layer[],
  compiled: CompiledInternals,
): ((z: tf.Tensor, y: tf.Tensor) => TailStep) | undefined {
  const plain = (d: DenseInternals) =>
    !d.kernelRegularizer && !d.biasRegularizer && !d.activityRegularizer && !d.kernelConstraint && !d.biasConstraint;
  if (!HIDDEN.has(activationOf(first)) || !plain(first) || compiled.lossFunctions.length !== 1) return undefined;
  const entries: Entry[] = [];
  for (const layer of after) {
    const kind = layer.getClassName();
    if (kind === 'Dropout' && noiseShape(layer) == null) entries.push({ dropout: layer });
    else if (kind === 'Dense' && plain(denseInternals(layer))) {
      const dense = denseInternals(layer);
      if (!dense.kernel.trainable) return undefined;
      entries.push({ dense, activation: activationOf(dense) });
    } else return undefined;
  }
  const last = entries.at(-1);
  const loss = compiled.loss;
  if (!last || !('dense' in last)) return undefined;
  const binary = loss === 'binaryCrossentropy' && last.activation === 'sigmoid';
  if (!binary && !(loss === 'categoricalCrossentropy' && last.activation === 'softmax')) return undefined;
  if (entries.slice(0, -1).some((e) => 'dense' in e && !HIDDEN.has(e.activation))) return undefined;
  if (tf.tidy(() => compiled.calculateLosses().length) > 0) return undefined;
  const eps = tf.backend().epsilon(); // the clipping of tfjs-layers' cross-entropies

  return (z, y) => {
    // Forward, keeping what the backward pass needs.
    const h0 = first.activation.apply(first.bias ? tf.add(z, first.bias.read()) : z);
    let h = h0;
    const saved: Saved[] = [];
    for (const e of entries) {
      if ('dropout' in e) {
        const mask = e.dropout.apply(tf.onesLike(h), { training: true }) as tf.Tensor; // the layer's own multiplier
        saved.push({ input: h, mask });
        h = tf.mul(h, mask);
      } else {
        const a = tf.matMul(h, e.dense.kernel.read());
        const output = e.dense.activation.apply(e.dense.bias ? tf.add(a, e.dense.bias.read()) : a);
        saved.push({ ...e, input: h, output });
        h = output;
      }
    }
    const p = h;
    const lossValue = tf.mean(compiled.lossFunctions[0](y, p)) as tf.Scalar;
    const metrics = compiled.metricsTensors.map(([metric]) => tf.mean(metric(y, p)) as tf.Scalar);

    // Backward: d loss / d logits, then layer by layer to z.
    const n = p.shape[0];
    const clipped = (q: tf.Tensor) =>
      tf.cast(tf.logicalAnd(tf.greaterEqual(q, eps), tf.lessEqual(q, 1 - eps)), 'float32');
    let g = binary
      ? tf.div(tf.mul(tf.sub(p, y), clipped(p)), p.size) // mean over samples and outputs
      : tf.div(tf.mul(tf.sub(p, y), clipped(tf.sum(tf.mul(p, y), -1, true))), n); // one-hot: the true class's p
    const grads: { name: string; tensor: tf.Tensor }[] = [];
    for (let i = saved.length - 1; i >= 0; i--) {
      const s = saved[i];
      if ('mask' in s) {
        g = tf.mul(g, s.mask);
        continue;
      }
      if (i < saved.length - 1) {
        const d = slope[s.activation as Activation](s.output);
        if (d) g = tf.mul(g, d);
      }
      const kernel = s.dense.kernel.read();
      grads.push({ name: kernel.name, tensor: tf.matMul(s.input, g, true, false) });
      if (s.dense.bias) grads.push({ name: s.dense.bias.read().name, tensor: tf.sum(g, 0) });
      g = tf.matMul(g, kernel, false, true);
    }
    const d0 = slope[activationOf(first) as Activation](h0);
    const dz = d0 ? tf.mul(g, d0) : g;
    if (first.bias) grads.push({ name: first.bias.read().name, tensor: tf.sum(dz, 0) });
    return { loss: lossValue, metrics, dz, grads };
  };
}
