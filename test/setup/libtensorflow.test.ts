// The two ways setup provisions libtensorflow: the official tarball (a local HTTP server stands in for Google's
// storage) and a TensorFlow wheel from PyPI (a small wheel-shaped zip stands in for the 270 MB one).
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
// @ts-expect-error plain ESM setup script without types
import * as libtf from '../../scripts/setup/libtensorflow.mjs';

const root = path.resolve(import.meta.dirname, '../..');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'xp-setup-'));
let server: http.Server;
let base = '';
const requests: string[] = [];

function tarball(name: string, withHeaders: boolean): void {
  const dir = path.join(tmp, `src-${name}`);
  fs.mkdirSync(path.join(dir, 'lib'), { recursive: true });
  fs.writeFileSync(path.join(dir, 'lib', 'libtensorflow.so.2'), 'not really a library');
  if (withHeaders) {
    fs.mkdirSync(path.join(dir, 'include', 'tensorflow', 'c'), { recursive: true });
    fs.writeFileSync(path.join(dir, 'include', 'tensorflow', 'c', 'c_api.h'), '/* C API */');
  }
  execFileSync('tar', ['-czf', path.join(tmp, 'www', `${name}.tar.gz`), '-C', dir, '.']);
}

beforeAll(async () => {
  fs.mkdirSync(path.join(tmp, 'www'));
  tarball('libtensorflow-cpu-linux-x86_64-2.9.1', true);
  tarball('libtensorflow-broken', false);
  server = http.createServer((req, res) => {
    requests.push(req.url!);
    const file = path.join(tmp, 'www', req.url!);
    if (!fs.existsSync(file)) return void res.writeHead(404).end();
    res.writeHead(200);
    fs.createReadStream(file).pipe(res);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  base = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
});
afterAll(() => {
  server.close();
  fs.rmSync(tmp, { recursive: true, force: true });
});

describe('libtensorflow from the official tarball', () => {
  it('downloads once, extracts into the cache, and stages lib/ and include/ where binding.gyp looks', async () => {
    const cache = path.join(tmp, 'cache');
    const url = `${base}/libtensorflow-cpu-linux-x86_64-2.9.1.tar.gz`;
    const source = await libtf.fromTarball(url, cache);
    expect(fs.readFileSync(path.join(source.lib, 'libtensorflow.so.2'), 'utf8')).toBe('not really a library');
    expect(fs.existsSync(path.join(source.include, 'tensorflow', 'c', 'c_api.h'))).toBe(true);
    await libtf.fromTarball(url, cache);
    expect(requests.filter((r) => r.endsWith('2.9.1.tar.gz'))).toHaveLength(1); // cached the second time
    const tfjsNode = path.join(tmp, 'fake-tfjs-node');
    libtf.stage(source, tfjsNode);
    expect(fs.existsSync(path.join(tfjsNode, 'deps', 'lib', 'libtensorflow.so.2'))).toBe(true);
    expect(fs.existsSync(path.join(tfjsNode, 'deps', 'include', 'tensorflow', 'c', 'c_api.h'))).toBe(true);
  });

  it('rejects an archive without headers and leaves nothing half-written', async () => {
    const cache = path.join(tmp, 'cache-broken');
    await expect(libtf.fromTarball(`${base}/libtensorflow-broken.tar.gz`, cache)).rejects.toThrow(
      /not a libtensorflow archive/,
    );
    expect(fs.readdirSync(path.join(cache, 'libtensorflow'))).toEqual([]);
    expect(fs.readdirSync(path.join(cache, 'downloads'))).toEqual([]);
  });

  it('an unreachable or missing download fails without leaving a partial file', async () => {
    const dest = path.join(tmp, 'dl', 'x.tar.gz');
    await expect(libtf.download(`${base}/missing.tar.gz`, dest)).rejects.toThrow(/HTTP 404/);
    expect(fs.existsSync(path.dirname(dest)) ? fs.readdirSync(path.dirname(dest)) : []).toEqual([]);
  });
});

describe('libtensorflow from a TensorFlow wheel', () => {
  it('extracts libtensorflow_cc, the framework library and the C headers, and points libtensorflow.so at _cc', async () => {
    const cache = path.join(tmp, 'wheel-cache');
    const wheels = path.join(cache, 'wheels');
    fs.mkdirSync(wheels, { recursive: true });
    const wheel = path.join(
      wheels,
      `${libtf.WHEEL.name.replace(/-/g, '_')}-${libtf.WHEEL.version}-cp311-cp311-manylinux_2_27_x86_64.whl`,
    );
    execFileSync('python3', [
      '-c',
      `
import zipfile, sys
with zipfile.ZipFile(sys.argv[1], 'w') as z:
    z.writestr('tensorflow/libtensorflow_cc.so.2', 'cc')
    z.writestr('tensorflow/libtensorflow_framework.so.2', 'framework')
    z.writestr('tensorflow/include/tensorflow/c/c_api.h', '/* c api */')
    z.writestr('tensorflow/include/tensorflow/core/platform/ctstring.h', '/* tstring */')
    z.writestr('tensorflow/include/tsl/platform/ctstring.h', '/* tsl */')
    z.writestr('tensorflow/include/xla/tsl/c/tsl_status.h', '/* status */')
    z.writestr('tensorflow/include/Eigen/Core', '/* not needed */')
    z.writestr('tensorflow/python/ops/big.py', '# not needed')
`,
      wheel,
    ]);
    const source = await libtf.fromWheel(cache);
    expect(fs.readlinkSync(path.join(source.lib, 'libtensorflow.so'))).toBe('libtensorflow_cc.so.2');
    expect(fs.readFileSync(path.join(source.lib, 'libtensorflow.so'), 'utf8')).toBe('cc');
    expect(fs.readFileSync(path.join(source.lib, 'libtensorflow_framework.so'), 'utf8')).toBe('framework');
    for (const h of [
      'tensorflow/c/c_api.h',
      'tensorflow/core/platform/ctstring.h',
      'tsl/platform/ctstring.h',
      'xla/tsl/c/tsl_status.h',
    ]) {
      expect(fs.existsSync(path.join(source.include, h)), h).toBe(true);
    }
    expect(fs.existsSync(path.join(source.include, 'Eigen'))).toBe(false);
  });
});

describe('the installed backend', () => {
  it('is native TensorFlow, never wasm or the pure-JS CPU backend', () => {
    expect(tf.getBackend()).toBe('tensorflow');
    const y = tf.conv2d(tf.ones([1, 8, 8, 3]), tf.ones([3, 3, 3, 4]), 1, 'same') as tf.Tensor4D;
    expect(y.dataSync()[(1 * 8 + 1) * 4]).toBe(27);
    expect(libtf.verify(root).backend).toBe('tensorflow');
  });
});
