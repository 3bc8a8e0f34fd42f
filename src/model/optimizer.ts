// Keras optimizers with Keras' default hyperparameters, on tfjs' implementations except RMSprop without momentum
// and Adam, which have Keras 3's own (src/accel/rmsprop.ts, adam.ts: fewer memory passes, XLA-fused for large
// variables when the acceleration policy has fused updates). Keras 3, tfjs and KerasRMSprop all put RMSprop's
// epsilon inside the square root.
import * as tf from '@tensorflow/tfjs-node';
import { accelPolicy, KerasAdam, KerasRMSprop, type AccelPolicy } from '../accel/index.ts';
import type { OptimizerConfig } from '../config/types.ts';
import { ModelError } from '../errors.ts';

export function buildOptimizer(cfg: OptimizerConfig, policy: AccelPolicy = accelPolicy()): tf.Optimizer {
  const lr = cfg.learning_rate;
  if (!(lr > 0))
    throw new ModelError(`optimizer.learning_rate must be a positive number, got ${lr}.`, {
      hint: 'The Keras reference uses 1e-4 with RMSprop.',
    });
  const epsilon = cfg.epsilon ?? 1e-7;
  switch (cfg.name) {
    case 'rmsprop':
      return (cfg.momentum ?? 0) > 0
        ? tf.train.rmsprop(lr, cfg.rho ?? 0.9, cfg.momentum, epsilon)
        : new KerasRMSprop(lr, cfg.rho ?? 0.9, epsilon, policy.fusedUpdates);
    case 'adam':
      return new KerasAdam(lr, cfg.beta_1 ?? 0.9, cfg.beta_2 ?? 0.999, epsilon, policy.fusedUpdates);
    case 'sgd':
      // Same trajectory as Keras' v = m*v - lr*g for a constant learning rate.
      return (cfg.momentum ?? 0) > 0 || cfg.nesterov
        ? tf.train.momentum(lr, cfg.momentum ?? 0, cfg.nesterov ?? false)
        : tf.train.sgd(lr);
    case 'adagrad':
      return tf.train.adagrad(lr, 0.1); // Keras' initial_accumulator_value
    default:
      throw new ModelError(`Unknown optimizer "${(cfg as OptimizerConfig).name}".`, {
        hint: 'Use rmsprop, adam, sgd or adagrad.',
      });
  }
}

/**
 * Sets the rate of the optimizer's next steps (optimizer.schedule): xp's Keras optimizers and tfjs' read it at each
 * update, tfjs' SGD and momentum keep it as a tensor that setLearningRate replaces.
 */
export function setLearningRate(optimizer: tf.Optimizer, rate: number): void {
  const o = optimizer as tf.Optimizer & { learningRate: number; setLearningRate?: (rate: number) => void };
  if (o.learningRate === rate) return;
  if (o.setLearningRate) o.setLearningRate(rate);
  else o.learningRate = rate;
}
