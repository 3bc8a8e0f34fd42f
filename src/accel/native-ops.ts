// xp's own TensorFlow kernels (native/xp_ops.cc). Setup compiles them against tfjs-node's libtensorflow into
// native/build/xp_ops.node; loading that file registers them with TensorFlow in this process, and tfjs-node's
// backend runs them by name like any TensorFlow op. Whether they are used is the acceleration policy's decision
// (policy.ts): it loads them through nativeOpsUnavailable() once, and without them xp takes tfjs ops, the same
// math in more memory passes.
import fs from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import * as tf from '@tensorflow/tfjs-node';
import { nodeBackend, type NodeBackend } from './tfjs-internals.ts';

export const NATIVE_OPS_FILE = path.resolve(
  path.dirname(fileURLToPath(import.meta.url)),
  '../../native/build/xp_ops.node',
);

// Per file: undefined while untried, '' once loaded, else why it cannot be.
const attempts = new Map<string, string>();

/** Loads the kernels from `file` once; '' when they are loaded, else why they are unavailable. */
export function nativeOpsUnavailable(file = NATIVE_OPS_FILE): string {
  let why = attempts.get(file);
  if (why === undefined) {
    why = load(file);
    attempts.set(file, why);
  }
  return why;
}

/** True when the kernels are loaded (loading them on first call). */
export const nativeOps = (): boolean => nativeOpsUnavailable() === '';

function load(file: string): string {
  if (!nodeBackend()) return `the tfjs backend is ${tf.getBackend()}, not tfjs-node's TensorFlow`;
  if (!fs.existsSync(file)) return `${file} is missing (npm run setup builds it)`;
  try {
    createRequire(import.meta.url)(file);
    return '';
  } catch (error) {
    return String(error);
  }
}

/** Threads for a kernel: as many as TensorFlow's own pools get (`--parallel` divides them), else all cores. */
const threads = () => Number(process.env.TF_NUM_INTRAOP_THREADS) || 0;

/** The backend that runs xp's kernels; throws when they are unavailable (the policy checks first). */
function kernelBackend(): NodeBackend {
  const why = nativeOpsUnavailable();
  if (why) throw new Error(`xp's native kernels are not loaded: ${why}`);
  const backend = nodeBackend();
  if (!backend)
    throw new Error(`xp's native kernels run on tfjs-node's TensorFlow, and the backend is ${tf.getBackend()}`);
  return backend;
}

/**
 * One RMSprop step (stored-slot form, see rmsprop.ts) of a dense kernel w [n,m] whose gradient is x^T dz, for
 * inputs x [b,n] and the loss gradient dz [b,m] at the layer's output, computed in the same pass as the update.
 * It writes w and s in place (they must not share their buffers with any other tensor: copy before keeping
 * weights aside) and visits only the kernel rows with a nonzero input in the batch: the others keep w, and their
 * decays of s (s' = rho*s) wait in `last` (int32 [n], the step each row's s is up to date at) until the row is
 * next visited or rmspropCatchUp runs; the result is the same, multiplication by multiplication. `step` counts
 * this variable's updates from 1. With xNext [b',n], returns xNext times the new kernel (the next batch's
 * matmul). Throws when the kernels are unavailable: check nativeOps() first.
 */
export function denseRmsprop(
  w: tf.Tensor,
  s: tf.Tensor,
  last: tf.Tensor,
  step: number,
  x: tf.Tensor,
  dz: tf.Tensor,
  h: { rho: number; eps: number; step: number },
  xNext?: tf.Tensor,
): tf.Tensor | undefined {
  const backend = kernelBackend();
  const float = backend.binding.TF_ATTR_FLOAT;
  const attrs = [
    { name: 'rho', type: float, value: h.rho },
    { name: 'eps', type: float, value: h.eps },
    { name: 'step', type: float, value: h.step },
    { name: 'threads', type: backend.binding.TF_ATTR_INT, value: threads() },
  ];
  return tf.tidy(() => {
    const next = xNext ?? tf.zeros([0, w.shape[0]]);
    const [zNext] = backend.executeMultipleOutputs(
      'XpDenseRmsprop',
      attrs,
      [w, s, last, tf.scalar(step, 'int32'), x, dz, next],
      1,
    );
    return xNext ? zNext : undefined;
  });
}

/** Brings every row of s up to `step` (the decays denseRmsprop left pending), in place. */
export function rmspropCatchUp(s: tf.Tensor, last: tf.Tensor, step: number, rho: number): void {
  const backend = kernelBackend();
  tf.tidy(() => {
    backend.executeMultipleOutputs(
      'XpRmspropCatchUp',
      [{ name: 'rho', type: backend.binding.TF_ATTR_FLOAT, value: rho }],
      [s, last, tf.scalar(step, 'int32')],
      0,
    );
  });
}

/** x [r,n] times w [n,m], skipping the zeros of x (backbone features after a ReLU are mostly zeros). */
export function sparseMatMul(x: tf.Tensor, w: tf.Tensor): tf.Tensor {
  const backend = kernelBackend();
  return backend.executeMultipleOutputs(
    'XpSparseMatMul',
    [{ name: 'threads', type: backend.binding.TF_ATTR_INT, value: threads() }],
    [x, w],
    1,
  )[0];
}

/** x * scale - shift, in place (two roundings, as tf.sub(tf.mul(x, scale), shift)). */
export function scaleShift(x: tf.Tensor, scale: number, shift: number): void {
  const backend = kernelBackend();
  const float = backend.binding.TF_ATTR_FLOAT;
  backend.executeMultipleOutputs(
    'XpScaleShift',
    [
      { name: 'scale', type: float, value: scale },
      { name: 'shift', type: float, value: shift },
    ],
    [x],
    0,
  );
}
