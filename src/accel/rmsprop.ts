// Keras 3's RMSprop (epsilon inside the square root, as Keras and tfjs both do) in fewer tensor passes than
// tf.train.rmsprop, because on a large head every elementwise pass over the kernel streams it through memory and
// tfjs' version makes about twice as many (it even computes the mean square twice). Large variables take an
// XLA-fused update (xla-update.ts) that streams w, g, s in and w, s out once. A dense kernel on backbone features
// goes further (applyDenseGradient): its gradient never exists as a tensor, and the native kernel
// (native-ops.ts) updates in place only the rows with input.
//   Keras:  v' = rho*v + (1-rho)*g^2;  w' = w - lr*g / sqrt(v' + eps)
//   stored: s = v/(1-rho), so s' = rho*s + g^2 and w' = w - (lr/sqrt(1-rho)) * g / sqrt(s' + eps/(1-rho))
import * as tf from '@tensorflow/tfjs-node';
import { denseRmsprop, rmspropCatchUp } from './native-ops.ts';
import { accelPolicy } from './policy.ts';
import { compileFused, FUSED_MIN_SIZE, tfOps, type FusedFn, type Ops } from './xla-update.ts';

type NamedTensor = { name: string; tensor: tf.Tensor };

function rmspropStep<X>(o: Ops<X>, w: X, g: X, s: X, rho: number, eps: number, step: X | number): [X, X] {
  const next = o.add(o.mul(s, rho), o.square(g));
  return [o.sub(w, o.mul(o.div(g, o.sqrt(o.add(next, eps))), step)), next];
}

export class KerasRMSprop extends tf.Optimizer {
  static get className() {
    return 'KerasRMSprop';
  }

  private readonly slots = new Map<string, tf.Variable>();
  // Kernels updated in place by applyDenseGradient: per row, the update its slot is up to date at.
  private readonly lazy = new Map<string, { last: tf.Tensor; step: number }>();
  // Compiled on first use of a large variable, when the policy has fused updates.
  private readonly fused: FusedFn;

  constructor(
    public learningRate: number, // a schedule changes it between steps (setLearningRate)
    readonly rho = 0.9,
    readonly epsilon = 1e-7,
    fusedUpdates = accelPolicy().fusedUpdates,
  ) {
    super();
    // The step size is an input, not a constant of the compiled graph: a schedule changes it from step to step.
    this.fused = compileFused(4, (o, w, g, s, step) => rmspropStep(o, w, g, s, this.rho, this.eps, step), fusedUpdates);
  }

  // The hyperparameters of the stored-slot form (see the header).
  private get step() {
    return this.learningRate / Math.sqrt(1 - this.rho);
  }

  private get eps() {
    return this.epsilon / (1 - this.rho);
  }

  applyGradients(variableGradients: tf.NamedTensorMap | NamedTensor[]): void {
    const list = Array.isArray(variableGradients)
      ? variableGradients
      : Object.entries(variableGradients).map(([name, tensor]) => ({ name, tensor }));
    for (const { name, tensor: g } of list) {
      if (g == null) continue;
      this.catchUp(name);
      const value = tf.engine().registeredVariables[name];
      const slot = this.slot(name, value);
      tf.tidy(() => {
        const fused =
          value.size >= FUSED_MIN_SIZE && value.dtype === 'float32'
            ? this.fused(value, g, slot, tf.scalar(this.step))
            : undefined;
        const [w, next] = fused ?? rmspropStep(tfOps, value, g, slot, this.rho, this.eps, this.step);
        slot.assign(next);
        value.assign(w);
      });
    }
    this.incrementIterations();
  }

  /**
   * The update of a dense layer's kernel whose gradient is x^T dz (x the layer's input, dz the loss gradient at
   * its output), with the gradient computed inside the update's single pass (native-ops.ts); with xNext, also
   * xNext times the updated kernel. Only the native policy's head step calls it: it throws without the kernels.
   * Does not count an iteration: applyGradients, called for the step's other variables, does.
   */
  applyDenseGradient(name: string, x: tf.Tensor, dz: tf.Tensor, xNext?: tf.Tensor): { zNext?: tf.Tensor } {
    const value = tf.engine().registeredVariables[name];
    const slot = this.slot(name, value);
    let lazy = this.lazy.get(name);
    if (!lazy) {
      lazy = { last: tf.keep(tf.zeros([value.shape[0]], 'int32')), step: 0 }; // outlives the step's tidy
      this.lazy.set(name, lazy);
    }
    lazy.step++;
    // In place: the kernel and its slot keep their tensors (and dataIds); their contents change.
    const zNext = denseRmsprop(
      value,
      slot,
      lazy.last,
      lazy.step,
      x,
      dz,
      { rho: this.rho, eps: this.eps, step: this.step },
      xNext,
    );
    return { zNext };
  }

  /** Applies the slot decays that applyDenseGradient left pending for a variable. */
  private catchUp(name: string): void {
    const lazy = this.lazy.get(name);
    const slot = this.slots.get(name);
    if (lazy && slot) rmspropCatchUp(slot, lazy.last, lazy.step, this.rho);
  }

  private slot(name: string, value: tf.Variable): tf.Variable {
    let s = this.slots.get(name);
    if (!s) {
      s = tf.tidy(() => tf.zerosLike(value).variable(false, `${name}/rms`));
      this.slots.set(name, s);
    }
    return s;
  }

  async getWeights(): Promise<NamedTensor[]> {
    for (const name of this.lazy.keys()) this.catchUp(name);
    const scale = 1 - this.rho;
    return [
      await this.saveIterations(),
      ...[...this.slots].map(([name, s]) => ({ name: `${name}/rms`, tensor: tf.mul(s, scale) })),
    ];
  }

  async setWeights(weightValues: NamedTensor[]): Promise<void> {
    const rest = await this.extractIterations(weightValues);
    for (const { name, tensor } of rest) {
      const variable = name.replace(/\/rms$/, '');
      this.slots.get(variable)?.dispose();
      this.slots.set(
        variable,
        tf.tidy(() => tf.div(tensor, 1 - this.rho).variable(false)),
      );
    }
  }

  dispose(): void {
    for (const { last } of this.lazy.values()) last.dispose();
    this.lazy.clear();
    this.fused.dispose();
    for (const s of this.slots.values()) s.dispose();
    this.slots.clear();
    super.dispose();
  }

  getConfig(): tf.serialization.ConfigDict {
    return { learningRate: this.learningRate, rho: this.rho, epsilon: this.epsilon };
  }

  static fromConfig<T extends tf.serialization.Serializable>(
    cls: tf.serialization.SerializableConstructor<T>,
    config: tf.serialization.ConfigDict,
  ): T {
    return new cls(config.learningRate, config.rho, config.epsilon);
  }
}

tf.serialization.registerClass(KerasRMSprop);
