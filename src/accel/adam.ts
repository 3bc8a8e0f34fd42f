// Keras 3's Adam. tf.train.adam differs twice: it adds epsilon to the bias-corrected sqrt(v/(1-b2^t)) where
// Keras adds it to sqrt(v), and it makes a memory pass over the variable per op; large variables here take an
// XLA-fused update (xla-update.ts) instead, one pass per output.
//   alpha = lr * sqrt(1 - b2^t) / (1 - b1^t);  m' = m + (g - m)(1 - b1);  v' = v + (g^2 - v)(1 - b2)
//   w' = w - alpha * m' / (sqrt(v') + eps)
import * as tf from '@tensorflow/tfjs-node';
import { accelPolicy } from './policy.ts';
import { compileFused, FUSED_MIN_SIZE, tfOps, type FusedFn, type Ops } from './xla-update.ts';

type NamedTensor = { name: string; tensor: tf.Tensor };

function adamStep<X>(
  o: Ops<X>,
  w: X,
  g: X,
  m: X,
  v: X,
  alpha: X | number,
  beta1: number,
  beta2: number,
  epsilon: number,
): [X, X, X] {
  const nextM = o.add(m, o.mul(o.sub(g, m), 1 - beta1));
  const nextV = o.add(v, o.mul(o.sub(o.square(g), v), 1 - beta2));
  return [o.sub(w, o.div(o.mul(nextM, alpha), o.add(o.sqrt(nextV), epsilon))), nextM, nextV];
}

export class KerasAdam extends tf.Optimizer {
  static get className() {
    return 'KerasAdam';
  }

  private readonly slots = new Map<string, { m: tf.Variable; v: tf.Variable }>();
  // Compiled on first use of a large variable, when the policy has fused updates; alpha changes every step, so
  // it is an input.
  private readonly fused: FusedFn;

  constructor(
    public learningRate: number, // a schedule changes it between steps (setLearningRate)
    readonly beta1 = 0.9,
    readonly beta2 = 0.999,
    readonly epsilon = 1e-7,
    fusedUpdates = accelPolicy().fusedUpdates,
  ) {
    super();
    this.fused = compileFused(
      5,
      (o, w, g, m, v, alpha) => adamStep(o, w, g, m, v, alpha, this.beta1, this.beta2, this.epsilon),
      fusedUpdates,
    );
  }

  applyGradients(variableGradients: tf.NamedTensorMap | NamedTensor[]): void {
    const list = Array.isArray(variableGradients)
      ? variableGradients
      : Object.entries(variableGradients).map(([name, tensor]) => ({ name, tensor }));
    const t = this.iterations + 1;
    const alpha = (this.learningRate * Math.sqrt(1 - this.beta2 ** t)) / (1 - this.beta1 ** t);
    for (const { name, tensor: g } of list) {
      if (g == null) continue;
      const value = tf.engine().registeredVariables[name];
      let slot = this.slots.get(name);
      if (!slot) {
        slot = tf.tidy(() => ({ m: tf.zerosLike(value).variable(false), v: tf.zerosLike(value).variable(false) }));
        this.slots.set(name, slot);
      }
      const { m, v } = slot;
      tf.tidy(() => {
        const fused =
          value.size >= FUSED_MIN_SIZE && value.dtype === 'float32'
            ? this.fused(value, g, m, v, tf.scalar(alpha))
            : undefined;
        const [nextW, nextM, nextV] =
          fused ?? adamStep(tfOps, value, g, m, v, alpha, this.beta1, this.beta2, this.epsilon);
        m.assign(nextM);
        v.assign(nextV);
        value.assign(nextW);
      });
    }
    this.incrementIterations();
  }

  // tf.train.adam's layout: iterations, then every first moment, then every second moment.
  async getWeights(): Promise<NamedTensor[]> {
    const slots = [...this.slots];
    return [
      await this.saveIterations(),
      ...slots.map(([name, s]) => ({ name: `${name}/m`, tensor: s.m })),
      ...slots.map(([name, s]) => ({ name: `${name}/v`, tensor: s.v })),
    ];
  }

  async setWeights(weightValues: NamedTensor[]): Promise<void> {
    const rest = await this.extractIterations(weightValues);
    const half = rest.length / 2;
    for (let i = 0; i < half; i++) {
      const name = rest[i].name.replace(/\/m$/, '');
      const old = this.slots.get(name);
      if (old) tf.dispose([old.m, old.v]);
      this.slots.set(name, { m: rest[i].tensor.variable(false), v: rest[half + i].tensor.variable(false) });
    }
  }

  dispose(): void {
    this.fused.dispose();
    for (const s of this.slots.values()) tf.dispose([s.m, s.v]);
    this.slots.clear();
    super.dispose();
  }

  getConfig(): tf.serialization.ConfigDict {
    return { learningRate: this.learningRate, beta1: this.beta1, beta2: this.beta2, epsilon: this.epsilon };
  }

  static fromConfig<T extends tf.serialization.Serializable>(
    cls: tf.serialization.SerializableConstructor<T>,
    config: tf.serialization.ConfigDict,
  ): T {
    return new cls(config.learningRate, config.beta1, config.beta2, config.epsilon);
  }
}

tf.serialization.registerClass(KerasAdam);
