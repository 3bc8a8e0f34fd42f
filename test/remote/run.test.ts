// Experiments by URL, trained end to end as a user runs them (real processes, a real MLflow server): a remote
// experiment extending a remote base, with its weights given relative to it, checked and run; a local file
// extending it; the chain of files recorded as MLflow tags. A local HTTP server on 127.0.0.1 stands in for the web.
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import AdmZip from 'adm-zip';
import { execa } from 'execa';
import { afterAll, beforeAll, expect, test } from 'vitest';
import { loadBackbone } from '../../src/model/backbone.ts';
import { writeKerasH5 } from '../../src/model/h5.ts';
import { layerWeights } from '../../src/model/weights.ts';
import { createClient, fromKeyValues, type Run } from '../../src/tracking/client.ts';
import { removeTempDirs, SERVER_TIMEOUT, startTestServer, tempDir } from '../tracking/helpers.ts';
import { startFileServer, type FileServer } from './helpers.ts';

const root = path.resolve(import.meta.dirname, '../..');
const bin = path.join(root, 'bin', 'xp.js');
// The shared data set sits beside the repository (a worktree's checkout may sit one level deeper).
const shared = [
  path.resolve(root, '../shared/datasets/cats_and_dogs_filtered'),
  path.resolve(root, '../../shared/datasets/cats_and_dogs_filtered'),
].find((d) => fs.existsSync(d))!;
const tmp = tempDir('remote-run');
let web: FileServer;
let mlflow: Awaited<ReturnType<typeof startTestServer>>;

const env = () => ({
  XP_CACHE_DIR: path.join(tmp, 'cache'),
  XP_DATA_DIR: path.join(tmp, 'data'),
  XP_RUNS_DIR: path.join(tmp, 'runs'),
  MLFLOW_TRACKING_URI: mlflow.url,
  MLFLOW_HTTP_REQUEST_MAX_RETRIES: '1',
});
const xp = (args: string[]) => execa(process.execPath, [bin, ...args], { reject: false, cwd: tmp, env: env() });
const sha = (bytes: string | Buffer) => createHash('sha256').update(bytes).digest('hex');

// 12 images of each class for training and for validation, as a zip: what a published experiment points data.url at.
function petsZip(): Buffer {
  const zip = new AdmZip();
  for (const split of ['train', 'validation']) {
    for (const cls of ['cats', 'dogs']) {
      const dir = path.join(shared, split, cls);
      for (const name of fs.readdirSync(dir).sort().slice(0, 12))
        zip.addFile(`pets/${split}/${cls}/${name}`, fs.readFileSync(path.join(dir, name)));
    }
  }
  return zip.toBuffer();
}

let base: string;
let exp: string;
let baseUrl: string;
let expUrl: string;

beforeAll(async () => {
  [web, mlflow] = await Promise.all([startFileServer(), startTestServer(path.join(tmp, 'mlflow'))]);
  // MobileNetV2's nsfwjs weights up to block_2_add, as a Keras .h5 file on the web.
  const source = await loadBackbone(
    { name: 'mobilenet_v2', weights: 'nsfwjs', cut_layer: 'block_2_add', trainable: false, preprocessing: 'auto' },
    [96, 96],
  );
  const h5 = path.join(tmp, 'backbone.h5');
  await writeKerasH5(h5, layerWeights(source.model));
  source.model.dispose();
  web.put('/models/backbone.h5', fs.readFileSync(h5));
  const zipUrl = web.put('/data/pets.zip', petsZip());
  base = `name: remote-base
data: {url: ${zipUrl}, train: pets/train, validation: pets/validation, image_size: [96, 96], batch_size: 8}
backbone: {name: mobilenet_v2, weights: nsfwjs, cut_layer: block_2_add, preprocessing: rescale}
head: {pooling: avg, units: [8], dropout: 0.2}
optimizer: {name: adam, learning_rate: 0.001}
training: {epochs: 1, steps_per_epoch: 2, validation_steps: 2}
`;
  exp = 'extends: ../lib/base.yaml\nname: remote-exp\nbackbone: {weights: ../models/backbone.h5}\n';
  baseUrl = web.put('/lib/base.yaml', base);
  expUrl = web.put('/exp/exp.yaml', exp);
}, SERVER_TIMEOUT);

afterAll(async () => {
  await Promise.all([web?.close(), mlflow?.stop()]);
  removeTempDirs();
}, 30_000);

const tags = (run: Run) => fromKeyValues(run.data.tags);
const params = (run: Run) => fromKeyValues(run.data.params);
async function runsOf(experimentName: string): Promise<Run[]> {
  const client = createClient(mlflow.url);
  const experiment = await client.getExperimentByName(experimentName);
  return client.searchRuns({ experimentIds: [experiment!.experiment_id] });
}

test('a remote experiment extending a remote base, its weights relative to it, is checked and runs; the run records its chain', async () => {
  const checked = await xp(['check', expUrl]);
  expect(checked.exitCode, checked.stderr).toBe(0);
  expect(checked.stdout).toBe(`${expUrl}: ok (mobilenet_v2 cut at block_2_add)`);
  // Checking read the weights from the same server, into the cache; the run uses the cached copy.
  expect(web.hits('/models/backbone.h5')).toBe(1);
  expect(checked.stderr).toBe(`Downloading the backbone weights ${web.url}/models/backbone.h5 into the cache`);

  const r = await xp(['run', expUrl, '--quiet']);
  expect(r.exitCode, r.stderr + r.stdout).toBe(0);
  expect(r.stdout).toContain('Backbone mobilenet_v2');
  expect(web.hits('/models/backbone.h5')).toBe(1);
  expect(web.hits('/exp/exp.yaml')).toBe(1);

  const [run] = await runsOf('remote-exp');
  expect(run.info.status).toBe('FINISHED');
  expect(tags(run)).toMatchObject({
    'mlflow.source.name': expUrl,
    'xp.source': expUrl,
    'xp.source_sha256': sha(exp),
    'xp.extends': JSON.stringify([{ spec: baseUrl, sha256: sha(base) }]),
  });
  expect(params(run)['backbone.weights']).toBe(`${web.url}/models/backbone.h5`);
  // Every remote byte the run used is pinned in ./xp.lock (the experiment came by URL): the files, weights and data.
  const pinned = JSON.parse(fs.readFileSync(path.join(tmp, 'xp.lock'), 'utf8')).remote as Record<string, string>;
  expect(pinned).toMatchObject({ [expUrl]: sha(exp), [baseUrl]: sha(base) });
  expect(Object.keys(pinned).sort()).toEqual(
    [baseUrl, expUrl, `${web.url}/data/pets.zip`, `${web.url}/models/backbone.h5`].sort(),
  );
}, 180_000);

test('a local sweep extending the remote experiment runs; every run of it records the chain: the local file, then the remote files as merged', async () => {
  const local = path.join(tmp, 'mine.yaml');
  fs.writeFileSync(local, `extends: ${expUrl}\nname: local-over-remote\nsweep:\n  head.units: [[4], [2]]\n`);
  const r = await xp(['run', local, '--quiet', '--no-backup']);
  expect(r.exitCode, r.stderr + r.stdout).toBe(0);
  const runs = await runsOf('local-over-remote');
  expect(runs).toHaveLength(3); // the sweep's parent and its two trials
  for (const run of runs) {
    expect(tags(run)).toMatchObject({
      'mlflow.source.name': local,
      'xp.source': local,
      'xp.source_sha256': sha(fs.readFileSync(local)),
      'xp.extends': JSON.stringify([
        { spec: baseUrl, sha256: sha(base) },
        { spec: expUrl, sha256: sha(exp) },
      ]),
    });
  }
  expect(
    runs
      .map((run) => params(run)['head.units'])
      .filter(Boolean)
      .sort(),
  ).toEqual(['[2]', '[4]']);
  // Nothing was fetched again: the experiment files and weights came from the cache.
  expect([web.hits('/exp/exp.yaml'), web.hits('/lib/base.yaml'), web.hits('/models/backbone.h5')]).toEqual([1, 1, 1]);
}, 180_000);
