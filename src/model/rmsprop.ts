// Keras 3's RMSprop (epsilon inside the square root, as Keras and tfjs both do) in fewer tensor passes than
// tf.train.rmsprop: the reference head's 38.5M-weight kernel makes every elementwise pass cost ~11 ms on 2 cores,
// and tfjs' version makes ~15 of them per step (it even computes the mean square twice). Here: 8.
//   Keras:  v' = rho*v + (1-rho)*g^2;  w' = w - lr*g / sqrt(v' + eps)
//   stored: s = v/(1-rho), so s' = rho*s + g^2 and w' = w - (lr/sqrt(1-rho)) * g / sqrt(s' + eps/(1-rho))
import * as tf from '@tensorflow/tfjs-node';

type NamedTensor = { name: string; tensor: tf.Tensor };

export class KerasRMSprop extends tf.Optimizer {
  static get className() {
    return 'KerasRMSprop';
  }

  private readonly slots = new Map<string, tf.Variable>();

  constructor(
    readonly learningRate: number,
    readonly rho = 0.9,
    readonly epsilon = 1e-7,
  ) {
    super();
  }

  applyGradients(variableGradients: tf.NamedTensorMap | NamedTensor[]): void {
    const list = Array.isArray(variableGradients) ? variableGradients : Object.entries(variableGradients).map(([name, tensor]) => ({ name, tensor }));
    const step = this.learningRate / Math.sqrt(1 - this.rho);
    const eps = this.epsilon / (1 - this.rho);
    for (const { name, tensor: g } of list) {
      if (g == null) continue;
      const value = tf.engine().registeredVariables[name];
      let s = this.slots.get(name);
      if (!s) {
        s = tf.tidy(() => tf.zerosLike(value).variable(false, `${name}/rms`));
        this.slots.set(name, s);
      }
      const slot = s;
      tf.tidy(() => {
        const next = tf.add(tf.mul(slot, this.rho), tf.square(g));
        slot.assign(next);
        value.assign(tf.sub(value, tf.mul(tf.div(g, tf.sqrt(tf.add(next, eps))), step)));
      });
    }
    this.incrementIterations();
  }

  async getWeights(): Promise<NamedTensor[]> {
    const scale = 1 - this.rho;
    return [await this.saveIterations(), ...[...this.slots].map(([name, s]) => ({ name: `${name}/rms`, tensor: tf.mul(s, scale) }))];
  }

  async setWeights(weightValues: NamedTensor[]): Promise<void> {
    const rest = await this.extractIterations(weightValues);
    for (const { name, tensor } of rest) {
      const variable = name.replace(/\/rms$/, '');
      this.slots.get(variable)?.dispose();
      this.slots.set(variable, tf.tidy(() => tf.div(tensor, 1 - this.rho).variable(false)));
    }
  }

  dispose(): void {
    for (const s of this.slots.values()) s.dispose();
    this.slots.clear();
    super.dispose();
  }

  getConfig(): tf.serialization.ConfigDict {
    return { learningRate: this.learningRate, rho: this.rho, epsilon: this.epsilon };
  }

  static fromConfig<T extends tf.serialization.Serializable>(cls: tf.serialization.SerializableConstructor<T>, config: tf.serialization.ConfigDict): T {
    return new cls(config.learningRate, config.rho, config.epsilon);
  }
}

tf.serialization.registerClass(KerasRMSprop);
