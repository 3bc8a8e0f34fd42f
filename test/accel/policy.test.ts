import { expect, it } from 'vitest';
import { describePolicy, policyNamed, resolvePolicy } from '../../src/accel/policy.ts';
import { NATIVE_OPS_FILE } from '../../src/accel/native-ops.ts';

const MISSING = '/nonexistent/native/build/xp_ops.node';

it('takes the native policy when the kernels load and XP_ACCEL is unset', () => {
  expect(resolvePolicy(undefined, NATIVE_OPS_FILE)).toEqual(policyNamed('native'));
  expect(resolvePolicy('', NATIVE_OPS_FILE).name).toBe('native');
});

it('falls back to XLA, saying why, when native/build/xp_ops.node is missing', () => {
  const policy = resolvePolicy(undefined, MISSING);
  expect(policy).toMatchObject({ name: 'xla', nativeKernels: false, fusedUpdates: true, compiledBackbone: true });
  expect(policy.fallback).toContain(`${MISSING} is missing (npm run setup builds it)`);
  expect(describePolicy(policy)).toBe(
    `acceleration: xla (XLA-fused updates, compiled backbone graph); native kernels unavailable: ${MISSING} is missing (npm run setup builds it)`,
  );
  expect(resolvePolicy('native', MISSING).fallback).toMatch(
    /^XP_ACCEL=native asked for, but native kernels unavailable/,
  );
});

it('XP_ACCEL chooses a lesser policy, and plain turns every speed-up off', () => {
  expect(resolvePolicy('xla', NATIVE_OPS_FILE)).toEqual(policyNamed('xla'));
  expect(resolvePolicy(' PLAIN ', MISSING)).toEqual({
    name: 'plain',
    nativeKernels: false,
    fusedUpdates: false,
    compiledBackbone: false,
  });
  expect(describePolicy(policyNamed('plain'))).toBe(
    'acceleration: plain (plain tfjs: trainOnBatch, model.predict, tfjs optimizer ops)',
  );
  expect(describePolicy(policyNamed('native'))).toBe(
    'acceleration: native (native dense-head kernels, XLA-fused updates, compiled backbone graph)',
  );
});
