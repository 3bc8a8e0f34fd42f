// `npm run bench:serve -- <run-dir>`: images/s and latency of `xp serve` under 1, 8 and 32 concurrent clients, each
// sending one 150x150 JPEG per request (autocannon, bounded in time), the server started as users start it. Figures
// print with the machine's CPU, and go to ./bench-results/serve-<time>.json.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import autocannon from 'autocannon';
import sharp from 'sharp';

const root = path.resolve(import.meta.dirname, '..');
const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    clients: { type: 'string', default: '1,8,32' },
    seconds: { type: 'string', default: '10' },
    image: {
      type: 'string',
      default: path.resolve(root, '../shared/datasets/cats_and_dogs_filtered/validation/cats/cat.2000.jpg'),
    },
    'serve-args': { type: 'string', default: '' },
  },
});
if (positionals.length !== 1) {
  console.error(
    'usage: npm run bench:serve -- <run-dir> [--clients 1,8,32] [--seconds 10] [--image FILE] [--serve-args="--max-batch 32"]',
  );
  process.exit(2);
}
const seconds = Number(values.seconds);
const jpeg = await sharp(values.image).resize(150, 150, { fit: 'fill' }).jpeg({ quality: 90 }).toBuffer();

// The server in a process of its own, so that the load generator does not share its event loop.
const serveArgs = ['serve', positionals[0], '--port', '0', ...values['serve-args'].split(/\s+/).filter(Boolean)];
const server = spawn(process.execPath, [path.join(root, 'bin', 'xp.js'), ...serveArgs], {
  stdio: ['ignore', 'pipe', 'inherit'],
});
const url = await new Promise<string>((resolve, reject) => {
  let out = '';
  server.stdout.on('data', (chunk: Buffer) => {
    out += chunk;
    const m = /listening on (http:\/\/\S+):/.exec(out);
    if (m) resolve(m[1]);
  });
  server.on('exit', (code) => reject(new Error(`xp serve ended (${code}) before listening:\n${out}`)));
});

interface Row {
  clients: number;
  seconds: number;
  answered: number;
  failed: number;
  imagesPerSecond: number;
  p50Ms: number;
  p99Ms: number;
}

const load = (connections: number, duration: number) =>
  autocannon({
    url: `${url}/invocations`,
    method: 'POST',
    headers: { 'content-type': 'image/jpeg' },
    body: jpeg,
    connections,
    duration,
  });

const rows: Row[] = [];
try {
  await load(4, 2); // warm-up: the model's first calls build its kernels
  for (const clients of values.clients.split(',').map(Number)) {
    const r = await load(clients, seconds);
    rows.push({
      clients,
      seconds: r.duration,
      answered: r['2xx'],
      failed: r.non2xx + r.errors + r.timeouts,
      imagesPerSecond: r['2xx'] / r.duration,
      p50Ms: r.latency.p50,
      p99Ms: r.latency.p99,
    });
    const row = rows.at(-1) as Row;
    console.log(
      `${String(clients).padStart(3)} clients: ${row.imagesPerSecond.toFixed(1).padStart(7)} images/s, p50 ${row.p50Ms} ms, p99 ${row.p99Ms} ms (${row.answered} answered, ${row.failed} failed, ${row.seconds} s)`,
    );
  }
} finally {
  server.kill('SIGTERM');
}
const machine = { cpu: os.cpus()[0]?.model, cores: os.availableParallelism(), node: process.version };
console.log(`machine: ${machine.cpu}, ${machine.cores} cores; the figures include whatever else ran on it`);
const out = path.join(process.cwd(), 'bench-results', `serve-${new Date().toISOString().replace(/[:.]/g, '-')}.json`);
fs.mkdirSync(path.dirname(out), { recursive: true });
fs.writeFileSync(
  out,
  `${JSON.stringify({ runDir: positionals[0], serveArgs, machine, image: '150x150 JPEG', rows }, null, 2)}\n`,
);
console.log(`written: ${path.relative(process.cwd(), out)}`);
