// Which speed-ups a run uses, decided once per process: xp's native kernels for the dense head, XLA-fused
// optimizer updates, and the frozen backbone compiled to one TensorFlow graph. Every accelerated path asks this
// policy and nothing else, so `XP_ACCEL=plain` gives the reference behaviour of plain tfjs (trainOnBatch,
// model.predict, tfjs optimizer ops) to compare against, and a machine without native/build/xp_ops.node still
// trains, on the next best policy.
import { XpError } from '../errors.ts';
import { NATIVE_OPS_FILE, nativeOpsUnavailable } from './native-ops.ts';
import { nodeBackend } from './tfjs-internals.ts';

export type AccelName = 'native' | 'xla' | 'plain';

export interface AccelPolicy {
  name: AccelName;
  /** The dense head trains and predicts with xp's kernels (native/xp_ops.cc). */
  nativeKernels: boolean;
  /** Optimizer updates of large variables run as one XLA-compiled TensorFlow graph each. */
  fusedUpdates: boolean;
  /** A frozen backbone runs as one TensorFlow graph session with batch norm folded into its convolutions. */
  compiledBackbone: boolean;
  /** Why the policy is not the one asked for (or the best one), when it is not. */
  fallback?: string;
}

/** The environment variable that chooses the policy. */
export const ACCEL_ENV = 'XP_ACCEL';

const NAMES: readonly AccelName[] = ['native', 'xla', 'plain'];

const POLICIES: Record<AccelName, Omit<AccelPolicy, 'fallback'>> = {
  native: { name: 'native', nativeKernels: true, fusedUpdates: true, compiledBackbone: true },
  xla: { name: 'xla', nativeKernels: false, fusedUpdates: true, compiledBackbone: true },
  plain: { name: 'plain', nativeKernels: false, fusedUpdates: false, compiledBackbone: false },
};

/** A policy by name, as it is with everything available (for tests that compare policies in one process). */
export const policyNamed = (name: AccelName): AccelPolicy => ({ ...POLICIES[name] });

/**
 * The policy for `requested` (XP_ACCEL's value; unset or empty: the best available), falling back to the next
 * best when what it needs is missing: native kernels need `nativeFile` to load, XLA and the compiled graph
 * need tfjs-node's TensorFlow backend.
 */
export function resolvePolicy(requested: string | undefined, nativeFile = NATIVE_OPS_FILE): AccelPolicy {
  const asked = requested?.trim().toLowerCase() || undefined;
  if (asked !== undefined && !NAMES.includes(asked as AccelName)) {
    throw new XpError(`${ACCEL_ENV}=${requested} is not an acceleration policy.`, {
      hint: `Use ${NAMES.join(', ')}, or leave ${ACCEL_ENV} unset for the best available.`,
    });
  }
  const want = (asked as AccelName | undefined) ?? 'native';
  if (want === 'plain') return policyNamed('plain');
  const note = (why: string) => (asked ? `${ACCEL_ENV}=${asked} asked for, but ${why}` : why);
  if (!nodeBackend())
    return { ...policyNamed('plain'), fallback: note("the tfjs backend is not tfjs-node's TensorFlow") };
  if (want === 'xla') return policyNamed('xla');
  const why = nativeOpsUnavailable(nativeFile);
  return why ? { ...policyNamed('xla'), fallback: note(`native kernels unavailable: ${why}`) } : policyNamed('native');
}

let decided: AccelPolicy | undefined;

/** The policy of this process, from XP_ACCEL and what loads; decided on first call. */
export function accelPolicy(): AccelPolicy {
  if (!decided) {
    decided = resolvePolicy(process.env[ACCEL_ENV]);
    if (decided.fallback && process.env.XP_DEBUG) console.error(`xp: ${describePolicy(decided)}`);
  }
  return decided;
}

/** One line for `--verbose`: the policy, what it accelerates, and why it fell back when it did. */
export function describePolicy(policy: AccelPolicy = accelPolicy()): string {
  const parts = [
    policy.nativeKernels && 'native dense-head kernels',
    policy.fusedUpdates && 'XLA-fused updates',
    policy.compiledBackbone && 'compiled backbone graph',
  ].filter(Boolean);
  const what = parts.length ? parts.join(', ') : 'plain tfjs: trainOnBatch, model.predict, tfjs optimizer ops';
  return `acceleration: ${policy.name} (${what})${policy.fallback ? `; ${policy.fallback}` : ''}`;
}
