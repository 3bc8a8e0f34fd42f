// Builds xp's own TensorFlow kernels (native/xp_ops.cc) against the libtensorflow staged for tfjs-node, with the
// C++ compiler node-gyp uses for the binding. A stamp of the source and command skips unchanged rebuilds.
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { spawnSync } from 'node:child_process';

/** Compiles when the source, the command or the output changed; returns what it did. */
export function build(root, tfjsNodeDir) {
  const source = path.join(root, 'native', 'xp_ops.cc');
  const out = path.join(root, 'native', 'build', 'xp_ops.node');
  const deps = path.join(tfjsNodeDir, 'deps');
  const cxx = process.env.CXX || 'g++';
  const args = [
    '-std=c++17',
    '-O3',
    '-fno-math-errno',
    '-Wall',
    '-Wno-psabi',
    '-Wno-uninitialized',
    '-shared',
    '-fPIC',
    '-I',
    path.join(deps, 'include'),
    source,
    '-o',
    out,
    '-L',
    path.join(deps, 'lib'),
    '-l:libtensorflow_framework.so.2',
    `-Wl,-rpath,${path.join(deps, 'lib')}`,
    '-lpthread',
  ];
  const stampFile = `${out}.stamp`;
  const stamp = crypto
    .createHash('sha256')
    .update(fs.readFileSync(source))
    .update(JSON.stringify([cxx, args]))
    .digest('hex');
  if (fs.existsSync(out) && fs.existsSync(stampFile) && fs.readFileSync(stampFile, 'utf8') === stamp)
    return 'up to date';
  fs.mkdirSync(path.dirname(out), { recursive: true });
  fs.rmSync(stampFile, { force: true });
  const r = spawnSync(cxx, args, { encoding: 'utf8' });
  if (r.status !== 0) {
    fs.rmSync(out, { force: true });
    const detail = r.error
      ? r.error.message
      : (r.stderr || '')
          .split('\n')
          .filter((l) => /error/.test(l))
          .slice(0, 6)
          .join('\n');
    throw Object.assign(new Error(`compiling native/xp_ops.cc failed:\n${detail}`), {
      hint: 'install a C++ compiler (Debian: apt-get install g++), or set CXX to one',
    });
  }
  fs.writeFileSync(stampFile, stamp);
  return `built with ${cxx}`;
}

/** Loads the kernels beside tfjs-node in a child process and checks one dense RMSprop step against tfjs ops. */
export function verify(root) {
  const code = `
import('./src/accel/native-ops.ts').then(async ({ nativeOpsUnavailable, denseRmsprop }) => {
  const tf = await import('@tensorflow/tfjs-node');
  const why = nativeOpsUnavailable();
  if (why) { console.error('the kernels did not load:', why); process.exit(1); }
  const w = tf.randomNormal([40, 48], 0, 1, 'float32', 1), s = tf.randomUniform([40, 48], 0, 1, 'float32', 2);
  const x = tf.randomNormal([3, 40], 0, 1, 'float32', 3), dz = tf.randomNormal([3, 48], 0, 1, 'float32', 4);
  const g = tf.matMul(x, dz, true, false);
  const w3 = tf.sub(w, tf.mul(tf.div(g, tf.sqrt(tf.add(tf.add(tf.mul(s, 0.9), tf.square(g)), 1e-6))), 1e-3));
  denseRmsprop(w, s, tf.zeros([40], 'int32'), 1, x, dz, { rho: 0.9, eps: 1e-6, step: 1e-3 }); // w, s in place
  const err = tf.max(tf.abs(tf.sub(w, w3))).dataSync()[0];
  if (!(err < 1e-6)) { console.error('XpDenseRmsprop differs from tfjs ops by', err); process.exit(1); }
  console.log('XpDenseRmsprop matches tfjs ops');
});`;
  const tsx = path.join(root, 'node_modules', 'tsx', 'dist', 'cli.mjs');
  const r = spawnSync(process.execPath, [tsx, '--eval', code], {
    cwd: root,
    encoding: 'utf8',
    env: { ...process.env, TF_CPP_MIN_LOG_LEVEL: '2', XP_DEBUG: '1' },
  });
  if (r.status !== 0)
    throw new Error(`the native kernels do not work: ${(r.stderr || r.stdout).trim().split('\n').slice(-3).join(' ')}`);
  return r.stdout.trim();
}
