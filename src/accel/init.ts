// Keras' default kernel initializer, Glorot uniform, seeded, with the random numbers drawn by TensorFlow's
// stateless generator: tfjs draws seeded uniforms in a JavaScript loop, slow for a large head's kernel and paid
// by every trial of a sweep, while TensorFlow's gives the same numbers for the same seed on any run, in native
// code. The numbers do not depend on the acceleration policy; the native policy only scales them to the Glorot
// range in place (no fresh buffer of the kernel's size to fault in). The class keeps tfjs' name and config, so
// saved models read `GlorotUniform` with its seed, as before; other backends use tfjs' generator.
import * as tf from '@tensorflow/tfjs-node';
import { scaleShift } from './native-ops.ts';
import { accelPolicy } from './policy.ts';
import { asInitializer, GlorotUniform, nodeBackend, type NodeBackend } from './tfjs-internals.ts';

class StatelessGlorotUniform extends GlorotUniform {
  constructor(private readonly seedValue: number) {
    super({ seed: seedValue });
  }

  apply(shape: number[], dtype?: tf.DataType): tf.Tensor {
    const backend = nodeBackend();
    if (shape.length !== 2 || (dtype && dtype !== 'float32') || !backend) return super.apply(shape, dtype);
    const limit = Math.sqrt(6 / Math.max(1, shape[0] + shape[1])); // Glorot: fan-average scaling, uniform
    const unit = statelessUniform(backend, shape, this.seedValue);
    if (accelPolicy().nativeKernels) {
      scaleShift(unit, 2 * limit, limit); // in place: the numbers of the line below, without two more fresh buffers
      return unit;
    }
    const weights = tf.tidy(() => tf.sub(tf.mul(unit, 2 * limit), limit));
    unit.dispose();
    return weights;
  }
}

/** Uniform [0, 1) floats from TensorFlow's StatelessRandomUniform: a function of the shape and the seed only. */
function statelessUniform(backend: NodeBackend, shape: number[], seed: number): tf.Tensor {
  const { TF_ATTR_TYPE, TF_FLOAT, TF_INT32 } = backend.binding;
  const attrs = [
    { name: 'dtype', type: TF_ATTR_TYPE, value: TF_FLOAT },
    { name: 'T', type: TF_ATTR_TYPE, value: TF_INT32 },
    { name: 'Tseed', type: TF_ATTR_TYPE, value: TF_INT32 },
  ];
  return tf.tidy(() =>
    backend.executeSingleOutput('StatelessRandomUniform', attrs, [
      tf.tensor1d(shape, 'int32'),
      tf.tensor1d([seed | 0, 0x5eed], 'int32'),
    ]),
  );
}

/** Glorot uniform with a seed: the same weights for the same seed and shape, however the trial runs. */
export function glorotUniform(seed: number): ReturnType<typeof tf.initializers.glorotUniform> {
  return asInitializer(new StatelessGlorotUniform(seed));
}
