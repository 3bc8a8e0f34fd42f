// xp's own TensorFlow kernels (native/xp_ops.cc). Setup compiles them against tfjs-node's libtensorflow into
// native/build/xp_ops.node; loading that file registers them with TensorFlow in this process, and tfjs-node's
// backend runs them by name like any TensorFlow op. Without it (XP_NATIVE_OPS=0, another backend, no build)
// callers use tfjs ops: the same math, more memory passes. XP_DEBUG=1 prints why the kernels are not used.
import fs from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import * as tf from '@tensorflow/tfjs-node';

export const NATIVE_OPS_FILE = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../native/build/xp_ops.node');

interface KernelBackend {
  binding: { TF_ATTR_FLOAT: number; TF_ATTR_INT: number };
  executeMultipleOutputs(name: string, attrs: { name: string; type: number; value: number }[], inputs: tf.Tensor[], outputs: number): tf.Tensor[];
}

let loaded: boolean | undefined;

/** Loads the kernels once; false when they are unavailable (then XP_DEBUG=1 says why). */
export function nativeOps(): boolean {
  if (loaded === undefined) loaded = load();
  return loaded;
}

function load(): boolean {
  const why = (reason: string) => {
    if (process.env.XP_DEBUG) console.error(`xp: native kernels not used: ${reason}`);
    return false;
  };
  if (process.env.XP_NATIVE_OPS === '0') return why('XP_NATIVE_OPS=0');
  if (tf.getBackend() !== 'tensorflow') return why(`backend is ${tf.getBackend()}`);
  if (!fs.existsSync(NATIVE_OPS_FILE)) return why(`${NATIVE_OPS_FILE} is missing (npm run setup builds it)`);
  try {
    createRequire(import.meta.url)(NATIVE_OPS_FILE);
    return true;
  } catch (error) {
    return why(String(error));
  }
}

/** Threads for a kernel: as many as TensorFlow's own pools get (`--parallel` divides them), else all cores. */
const threads = () => Number(process.env.TF_NUM_INTRAOP_THREADS) || 0;

/** The backend that runs xp's kernels; throws when they are unavailable (check nativeOps() first). */
function kernelBackend(): KernelBackend {
  if (!nativeOps()) throw new Error(`xp's native kernels are not loaded (XP_DEBUG=1 says why)`);
  return tf.backend() as unknown as KernelBackend;
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
    const [zNext] = backend.executeMultipleOutputs('XpDenseRmsprop', attrs, [w, s, last, tf.scalar(step, 'int32'), x, dz, next], 1);
    return xNext ? zNext : undefined;
  });
}

/** Brings every row of s up to `step` (the decays denseRmsprop left pending), in place. */
export function rmspropCatchUp(s: tf.Tensor, last: tf.Tensor, step: number, rho: number): void {
  const backend = kernelBackend();
  tf.tidy(() => {
    backend.executeMultipleOutputs('XpRmspropCatchUp', [{ name: 'rho', type: backend.binding.TF_ATTR_FLOAT, value: rho }], [s, last, tf.scalar(step, 'int32')], 0);
  });
}

/** x [r,n] times w [n,m], skipping the zeros of x (backbone features after a ReLU are mostly zeros). */
export function sparseMatMul(x: tf.Tensor, w: tf.Tensor): tf.Tensor {
  const backend = kernelBackend();
  return backend.executeMultipleOutputs('XpSparseMatMul', [{ name: 'threads', type: backend.binding.TF_ATTR_INT, value: threads() }], [x, w], 1)[0];
}

/** x * scale - shift, in place (two roundings, as tf.sub(tf.mul(x, scale), shift)). */
export function scaleShift(x: tf.Tensor, scale: number, shift: number): void {
  const backend = kernelBackend();
  const float = backend.binding.TF_ATTR_FLOAT;
  backend.executeMultipleOutputs('XpScaleShift', [{ name: 'scale', type: float, value: scale }, { name: 'shift', type: float, value: shift }], [x], 0);
}
