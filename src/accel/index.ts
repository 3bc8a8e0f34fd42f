// The acceleration seam: everything in xp that makes training fast on tfjs-node, behind one policy
// (policy.ts) decided once per process. The rest of xp imports from here only.
export { ACCEL_ENV, accelPolicy, describePolicy, type AccelName, type AccelPolicy } from './policy.ts';
export {
  headTrainer,
  predictor,
  referenceTrainer,
  trainStep,
  type HeadTrainer,
  type TrainStep,
} from './head-trainer.ts';
export { compileForInference, type CompiledInferenceFn } from './graph.ts';
export { freezeForInference, type InferenceFn } from './fold.ts';
export { KerasAdam } from './adam.ts';
export { KerasRMSprop } from './rmsprop.ts';
export { glorotUniform } from './init.ts';
export { registerNativeTransform } from './native-transform.ts';
export { batchNormInternals, setDropoutSeed, type BatchNormInternals } from './tfjs-internals.ts';
