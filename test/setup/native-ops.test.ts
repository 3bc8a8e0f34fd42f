// Setup's build of xp's TensorFlow kernels, in a scratch root: it compiles, skips an unchanged source, and a
// source that does not compile fails with the compiler's error and leaves no half-built addon behind.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { expect, it } from 'vitest';
// @ts-expect-error plain ESM setup script without types
import * as nativeOps from '../../scripts/setup/native-ops.mjs';

const root = path.resolve(import.meta.dirname, '../..');
const tfjsNodeDir = path.join(root, 'node_modules', '@tensorflow', 'tfjs-node');

function scratch(source: string): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'xp-native-'));
  fs.mkdirSync(path.join(dir, 'native'));
  fs.writeFileSync(path.join(dir, 'native', 'xp_ops.cc'), source);
  return dir;
}

it('builds the kernels once, then finds them up to date until the source changes', () => {
  const source = fs.readFileSync(path.join(root, 'native', 'xp_ops.cc'), 'utf8');
  const dir = scratch(source);
  expect(nativeOps.build(dir, tfjsNodeDir)).toMatch(/^built with/);
  expect(fs.statSync(path.join(dir, 'native', 'build', 'xp_ops.node')).size).toBeGreaterThan(1000);
  expect(nativeOps.build(dir, tfjsNodeDir)).toBe('up to date');
  fs.appendFileSync(path.join(dir, 'native', 'xp_ops.cc'), '\n// changed\n');
  expect(nativeOps.build(dir, tfjsNodeDir)).toMatch(/^built with/);
  fs.rmSync(dir, { recursive: true, force: true });
}, 60_000);

it('a source that does not compile fails with the error and what to do, and leaves nothing behind', () => {
  const dir = scratch('int broken( {\n');
  let error: (Error & { hint?: string }) | undefined;
  try {
    nativeOps.build(dir, tfjsNodeDir);
  } catch (e) {
    error = e as Error & { hint?: string };
  }
  expect(error?.message).toMatch(/compiling native\/xp_ops.cc failed:\n.*error/);
  expect(error?.hint).toMatch(/C\+\+ compiler/);
  expect(fs.existsSync(path.join(dir, 'native', 'build', 'xp_ops.node'))).toBe(false);
  expect(fs.existsSync(path.join(dir, 'native', 'build', 'xp_ops.node.stamp'))).toBe(false);
  fs.rmSync(dir, { recursive: true, force: true });
}, 60_000);
