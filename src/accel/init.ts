// Keras' default kernel initializer, Glorot uniform, seeded, with the random numbers drawn by TensorFlow.
// tfjs draws seeded uniforms in a JavaScript loop: about 0.4 s (0.7 s under load) for the reference head's
// 38.5M-weight kernel, paid by every trial of a sweep. TensorFlow's stateless generator gives the same numbers
// for the same seed on any run, in a few tens of milliseconds, scaled to the Glorot range in place (a fresh
// 154 MB buffer costs ~0.2 s of page faults here). The class keeps tfjs' name and config, so saved
// models read `GlorotUniform` with its seed, as before; other backends use tfjs' generator.
import * as tf from '@tensorflow/tfjs-node';
import { nativeOps, scaleShift } from './native-ops.ts';

type Initializer = ReturnType<typeof tf.initializers.glorotUniform>;

// tfjs exports the instance, not the class.
const GlorotUniform = tf.initializers.glorotUniform({}).constructor as new (args: { seed?: number }) => { apply(shape: number[], dtype?: tf.DataType): tf.Tensor };

interface KernelBackend {
  binding: { TF_ATTR_TYPE: number; TF_FLOAT: number; TF_INT32: number };
  executeSingleOutput(name: string, attrs: { name: string; type: number; value: number }[], inputs: tf.Tensor[]): tf.Tensor;
}

class NativeGlorotUniform extends GlorotUniform {
  constructor(private readonly seedValue: number) {
    super({ seed: seedValue });
  }

  apply(shape: number[], dtype?: tf.DataType): tf.Tensor {
    if (shape.length !== 2 || (dtype && dtype !== 'float32') || tf.getBackend() !== 'tensorflow') return super.apply(shape, dtype);
    const limit = Math.sqrt(6 / Math.max(1, shape[0] + shape[1])); // Glorot: fan-average scaling, uniform
    const unit = statelessUniform(shape, this.seedValue);
    if (nativeOps()) {
      scaleShift(unit, 2 * limit, limit); // in place: the numbers of the line below, without two more fresh buffers
      return unit;
    }
    const weights = tf.tidy(() => tf.sub(tf.mul(unit, 2 * limit), limit));
    unit.dispose();
    return weights;
  }
}

/** Uniform [0, 1) floats from TensorFlow's StatelessRandomUniform: a function of the shape and the seed only. */
function statelessUniform(shape: number[], seed: number): tf.Tensor {
  const backend = tf.backend() as unknown as KernelBackend;
  const { TF_ATTR_TYPE, TF_FLOAT, TF_INT32 } = backend.binding;
  const attrs = [
    { name: 'dtype', type: TF_ATTR_TYPE, value: TF_FLOAT },
    { name: 'T', type: TF_ATTR_TYPE, value: TF_INT32 },
    { name: 'Tseed', type: TF_ATTR_TYPE, value: TF_INT32 },
  ];
  return tf.tidy(() => backend.executeSingleOutput('StatelessRandomUniform', attrs, [tf.tensor1d(shape, 'int32'), tf.tensor1d([seed | 0, 0x5eed], 'int32')]));
}

/** Glorot uniform with a seed: the same weights for the same seed and shape, however the trial runs. */
export function glorotUniform(seed: number): Initializer {
  return new NativeGlorotUniform(seed) as unknown as Initializer;
}
