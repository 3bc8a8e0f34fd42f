// `xp serve` of a trained run, started as users start it (bin/xp.js) on a free port of 127.0.0.1: every form of
// MLflow's scoring protocol answers what `xp predict --json` prints for the same files; bad requests get their status
// and the next request is served; concurrent clients are batched, every answer right, no tensor left behind; SIGTERM
// answers the requests in flight and exits 0.
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { execa } from 'execa';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { venvPython } from '../../src/paths.ts';
import { trainTinyRun, xpIn } from '../export/tiny-run.ts';
import { expectAnswers, invoke, type Prediction, startServe } from './helpers.ts';

const root = path.resolve(import.meta.dirname, '../..');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'xp-serve-'));
const xp = xpIn(tmp);

let files: string[]; // the run's six validation images
let png: string; // the first of them as a PNG
let runDir: string;
/** xp predict --json of each file (and the PNG), by path. */
const expected = new Map<string, Prediction>();
let server: Awaited<ReturnType<typeof startServe>>;

beforeAll(async () => {
  ({ runDir, files } = await trainTinyRun(tmp, 'tiny-serve'));
  png = path.join(tmp, 'cat.2000.png');
  await sharp(files[0]).png().toFile(png);
  const predicted = await xp(['predict', runDir, ...files, png, '--json']);
  expect(predicted.exitCode, predicted.stderr).toBe(0);
  for (const line of predicted.stdout.trim().split('\n')) {
    const p = JSON.parse(line);
    expected.set(p.file, { class: p.class, probabilities: p.probabilities });
  }
  expect(expected.size).toBe(files.length + 1);
  server = await startServe(xp, runDir, ['--max-images', '4', '--max-body-mb', '1', '--read-timeout-ms', '1000']);
}, 600_000);

afterAll(async () => {
  server?.process.kill('SIGTERM');
  await server?.process;
  fs.rmSync(tmp, { recursive: true, force: true });
});

const b64 = (file: string) => fs.readFileSync(file).toString('base64');

/** xp predict's answers for `of`, in order. */
const answersOf = (of: string[]) => of.map((f) => expected.get(f) as Prediction);

async function metric(url: string, name: string): Promise<number> {
  const text = await (await fetch(`${url}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${name} `));
  expect(line, `${name} in /metrics`).toBeDefined();
  return Number(line?.split(' ')[1]);
}

describe('xp serve', () => {
  it('answers the health checks MLflow clients use', async () => {
    for (const p of ['/ping', '/health']) expect((await fetch(`${server.url}${p}`)).status).toBe(200);
    const version = await fetch(`${server.url}/version`);
    expect(await version.text()).toBe(JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8')).version);
    expect((await fetch(`${server.url}/nowhere`)).status).toBe(404);
  });

  it('answers every protocol form as xp predict --json does on the same files', async () => {
    const four = files.slice(1, 5);
    const forms: [string, BodyInit, string, string[]][] = [
      ['raw JPEG', fs.readFileSync(files[0]), 'image/jpeg', [files[0]]],
      ['raw PNG', fs.readFileSync(png), 'image/png', [png]],
      ['instances b64', JSON.stringify({ instances: four.map((f) => ({ b64: b64(f) })) }), 'application/json', four],
      ['instances strings', JSON.stringify({ instances: four.map(b64) }), 'application/json', four],
      [
        'instances named',
        JSON.stringify({ instances: four.map((f) => ({ image: { b64: b64(f) } })) }),
        'application/json',
        four,
      ],
      ['inputs list', JSON.stringify({ inputs: four.map((f) => ({ b64: b64(f) })) }), 'application/json', four],
      ['inputs column', JSON.stringify({ inputs: { image: four.map(b64) } }), 'application/json', four],
      [
        'dataframe_split',
        JSON.stringify({ dataframe_split: { columns: ['image'], data: four.map((f) => [b64(f)]) } }),
        'application/json',
        four,
      ],
      [
        'dataframe_records',
        JSON.stringify({ dataframe_records: four.map((f) => ({ image: b64(f) })) }),
        'application/json',
        four,
      ],
    ];
    for (const [form, body, type, of] of forms) {
      const r = await invoke(server.url, body, type);
      expect(r.status, `${form}: ${r.json.message}`).toBe(200);
      expectAnswers(r.json.predictions, answersOf(of));
    }
  });

  it("is read by MLflow's own scoring client (ScoringServerClient, a pandas DataFrame)", async () => {
    const four = files.slice(0, 4);
    const { port } = new URL(server.url);
    const script = `
import json, sys, pandas as pd
from mlflow.pyfunc.scoring_server.client import ScoringServerClient
client = ScoringServerClient("127.0.0.1", ${port})
client.wait_server_ready(timeout=60)
images = json.loads(sys.stdin.read())
print(json.dumps(client.invoke(pd.DataFrame({"image": images}))))
`;
    const r = await execa(venvPython(), ['-c', script], { input: JSON.stringify(four.map(b64)), reject: false });
    expect(r.exitCode, r.stderr).toBe(0);
    expectAnswers(JSON.parse(r.stdout.trim().split('\n').at(-1) ?? '{}').predictions, answersOf(four));
  });

  it('refuses each bad request with its status, and serves the next one', async () => {
    const good = async () =>
      expectAnswers(
        (await invoke(server.url, fs.readFileSync(files[3]), 'image/jpeg')).json.predictions,
        answersOf([files[3]]),
      );
    const big = Buffer.alloc(2 * 2 ** 20, 7);
    const chunked = new ReadableStream({
      start(c) {
        for (let i = 0; i < 4; i++) c.enqueue(big.subarray(i * 2 ** 19, (i + 1) * 2 ** 19));
        c.close();
      },
    });
    const jpeg = fs.readFileSync(files[0]);
    // 8000x7000 pixels of one colour: a small file, past the 50 megapixels xp serve decodes.
    const huge = await sharp({ create: { width: 8000, height: 7000, channels: 3, background: '#808080' } })
      .png({ compressionLevel: 9 })
      .toBuffer();
    expect(huge.length).toBeLessThan(2 ** 20);
    const cases: [string, () => Promise<{ status: number; json: { message?: string } }>, number, RegExp][] = [
      ['a body over --max-body-mb', () => invoke(server.url, big, 'image/jpeg'), 413, /1 MB/],
      [
        'a streamed body over --max-body-mb',
        () =>
          fetch(`${server.url}/invocations`, { method: 'POST', body: chunked, duplex: 'half' } as RequestInit).then(
            async (r) => ({ status: r.status, json: await r.json() }),
          ),
        413,
        /1 MB/,
      ],
      [
        'a body neither JSON nor an image',
        () => invoke(server.url, 'hello', 'text/plain'),
        400,
        /neither JSON nor an image/,
      ],
      ['JSON that does not parse', () => invoke(server.url, '{"instances": [', 'application/json'), 400, /not JSON/],
      [
        'JSON without an input field',
        () => invoke(server.url, '{"images": []}', 'application/json'),
        400,
        /exactly one of/,
      ],
      [
        'an image that does not decode',
        () =>
          invoke(
            server.url,
            JSON.stringify({ instances: [{ b64: b64(files[0]) }, { b64: 'aGVsbG8=' }] }),
            'application/json',
          ),
        400,
        /image 1 does not decode/,
      ],
      [
        'a truncated JPEG',
        () => invoke(server.url, jpeg.subarray(0, jpeg.length / 2), 'image/jpeg'),
        400,
        /image 0 does not decode/,
      ],
      [
        'an item that is not base64',
        () => invoke(server.url, JSON.stringify({ instances: [{ b64: '%%%' }] }), 'application/json'),
        400,
        /instances\[0\] is not base64/,
      ],
      [
        'too many images',
        () => invoke(server.url, JSON.stringify({ instances: files.slice(0, 5).map(b64) }), 'application/json'),
        400,
        /5 images in one request; at most 4/,
      ],
    ];
    for (const [what, send, status, message] of cases) {
      const r = await send();
      expect(r.status, what).toBe(status);
      expect(r.json.message, what).toMatch(message);
      await good();
    }
  });

  it('cuts off a client that does not send its whole request, and serves the next one', async () => {
    const { port } = new URL(server.url);
    const socket = net.connect(Number(port), '127.0.0.1');
    let received = '';
    socket.on('data', (d) => {
      received += d;
    });
    socket.write(
      'POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\nContent-Length: 1000\r\n\r\n0123',
    );
    // The server ends the connection by itself (--read-timeout-ms 1000); the client never sends the rest.
    await new Promise((resolve) => socket.on('close', resolve));
    expect(received).toMatch(/^HTTP\/1\.1 408 /);
    expectAnswers(
      (await invoke(server.url, fs.readFileSync(files[4]), 'image/jpeg')).json.predictions,
      answersOf([files[4]]),
    );
  });

  it('batches concurrent clients: 50 requests from 8 clients, none lost, every answer right, no tensor leaked', async () => {
    const tensorsBefore = await metric(server.url, 'xp_serve_tensors');
    const batchesBefore = await metric(server.url, 'xp_serve_batch_size_count');
    const singlesBefore = await metric(server.url, 'xp_serve_batch_size_bucket{le="1"}');
    let next = 0;
    const answered: string[] = [];
    const client = async () => {
      for (let i = next++; i < 50; i = next++) {
        const file = files[i % files.length];
        const r = await invoke(server.url, JSON.stringify({ instances: [{ b64: b64(file) }] }), 'application/json');
        expect(r.status, r.json.message).toBe(200);
        expectAnswers(r.json.predictions, answersOf([file]));
        answered.push(file);
      }
    };
    await Promise.all(Array.from({ length: 8 }, client));
    expect(answered).toHaveLength(50);
    const batches = (await metric(server.url, 'xp_serve_batch_size_count')) - batchesBefore;
    const singles = (await metric(server.url, 'xp_serve_batch_size_bucket{le="1"}')) - singlesBefore;
    expect(await metric(server.url, 'xp_serve_batch_size_sum')).toBeGreaterThanOrEqual(50);
    // Fewer model calls than images: some batches held more than one request's image.
    expect(batches).toBeLessThan(50);
    expect(batches - singles).toBeGreaterThan(0);
    expect(await metric(server.url, 'xp_serve_tensors')).toBe(tensorsBefore);
  });

  it('counts requests and errors in Prometheus format', async () => {
    const text = await (await fetch(`${server.url}/metrics`)).text();
    expect(text).toMatch(/^# TYPE xp_serve_requests_total counter$/m);
    expect(text).toMatch(/^xp_serve_requests_total\{path="\/invocations",status="200"\} \d+/m);
    expect(text).toMatch(/^xp_serve_errors_total\{status="413"\} 2$/m);
    expect(text).toMatch(/^xp_serve_errors_total\{status="408"\} 1$/m);
    expect(text).toMatch(/^xp_serve_request_duration_seconds_bucket\{le="0.1",path="\/invocations"\} \d+/m);
  });

  it('on SIGTERM answers the requests in flight, then exits 0', async () => {
    // A long batch wait holds the requests in the server until the signal has come.
    const serve = await startServe(xp, runDir, ['--batch-wait-ms', '3000', '--max-batch', '64']);
    const sent = files.map((file) =>
      invoke(serve.url, JSON.stringify({ instances: [{ b64: b64(file) }] }), 'application/json'),
    );
    while ((await metric(serve.url, 'xp_serve_requests_in_flight')) < files.length + 1)
      await new Promise((resolve) => setTimeout(resolve, 50));
    serve.process.kill('SIGTERM');
    const answers = await Promise.all(sent);
    for (const [i, r] of answers.entries()) {
      expect(r.status).toBe(200);
      expectAnswers(r.json.predictions, answersOf([files[i]]));
    }
    const ended = await serve.process;
    expect(ended.exitCode, ended.stderr).toBe(0);
    expect(ended.stdout).toMatch(/SIGTERM: answering 6 request\(s\) in flight/);
    expect(ended.stdout).toMatch(/stopped/);
    await expect(fetch(`${serve.url}/ping`)).rejects.toThrow();
  });
});
