// Screenshots of the MLflow UI comparing the trials of a sweep (docs/*.png, shown in the README), taken with
// headless Chromium (Debian: apt-get install chromium) driven over the DevTools protocol.
// Usage: npx tsx scripts/screenshot-ui.ts [experiment]
// The server is MLFLOW_TRACKING_URI's, else the embedded one on XP_RUNS_DIR/mlflow (runs/mlflow).
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { mlflowStoreDir, repoRoot } from '../src/paths.ts';
import { createClient, type MlflowClient, type Run } from '../src/tracking/client.ts';
import { resolveTrackingUri } from '../src/tracking/uri.ts';

interface Viewport {
  width: number;
  height: number;
}

// Sized for the README: GitHub shows them scaled down to its column, so no wider than needed.
const compareViewport = { width: 1280, height: 900 };
const runsViewport = { width: 1440, height: 850 };

async function main(experimentName: string): Promise<void> {
  const chromium = ['/usr/bin/chromium', '/usr/bin/chromium-browser', '/usr/bin/google-chrome'].find((c) =>
    fs.existsSync(c),
  );
  if (!chromium) throw new Error('No Chromium found: apt-get install chromium');
  const server = await resolveTrackingUri({ storeDir: mlflowStoreDir() });
  try {
    const client = createClient(server.url);
    const experiment = await client.getExperimentByName(experimentName);
    if (!experiment)
      throw new Error(
        `no experiment "${experimentName}" in ${server.url}: run \`xp run experiments/${experimentName}.yaml\` first`,
      );
    const id = experiment.experiment_id;
    // Experiments made before xp marked them as model training would open in MLflow 3's GenAI views.
    await fetch(`${server.url}/api/2.0/mlflow/experiments/set-experiment-tag`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ experiment_id: id, key: 'mlflow.experimentKind', value: 'custom_model_development' }),
    });
    const runs = await client.searchRuns({ experimentIds: [id], orderBy: ['attributes.start_time DESC'] });
    const tag = (r: Run, key: string) => r.data.tags?.find((t) => t.key === key)?.value;
    const parent = runs.find((r) => tag(r, 'xp.kind') === 'sweep');
    const trials = runs.filter((r) => parent && tag(r, 'mlflow.parentRunId') === parent.info.run_id);
    if (!parent || !trials.length) throw new Error(`experiment "${experimentName}" has no sweep with trials`);
    await colourTrials(client, trials);

    const browser = await launch(chromium);
    try {
      const page = await browser.newPage();
      const outDir = path.join(repoRoot, 'docs');
      const ids = encodeURIComponent(JSON.stringify(trials.map((r) => r.info.run_id)));
      await shootCompare(
        page,
        `${server.url}/#/compare-runs?runs=${ids}&experiments=${encodeURIComponent(JSON.stringify([id]))}`,
        trials.length,
        path.join(outDir, 'mlflow-sweep-compare.png'),
      );
      await shootRuns(
        page,
        `${server.url}/#/experiments/${id}/runs?compareRunsMode=CHART`,
        parent,
        trials,
        path.join(outDir, 'mlflow-sweep-runs.png'),
      );
    } finally {
      await browser.close();
    }
  } finally {
    await server.stop();
  }
}

/** The compare page of the trials (what the sweep's compare link opens), val_accuracy against the swept params. */
async function shootCompare(page: Page, url: string, count: number, file: string): Promise<void> {
  await page.goto(url, compareViewport);
  await page.waitFor(`document.body.innerText.includes('Comparing ${count} Runs')`);
  const metrics = '.du-bois-light-select:has(+ div > [data-testid="clear-button"])';
  await page.waitFor(`document.querySelector('${metrics} .du-bois-light-select-selection-item')`);
  await page.click(`${metrics} .du-bois-light-select-selection-item-remove`);
  await page.click(`${metrics} .du-bois-light-select-selector`);
  await page.typeText('val_accuracy');
  await page.key('Enter');
  await page.key('Escape');
  await page.waitFor(`[...document.querySelectorAll('svg text')].some((t) => t.textContent === 'val_accuracy')`);
  await page.shoot(file);
}

/** The experiment's runs as charts: the parent opened on its trials, val_accuracy per epoch, one line per trial. */
async function shootRuns(page: Page, url: string, parent: Run, trials: Run[], file: string): Promise<void> {
  await page.goto(url, runsViewport);
  await page.click(`[row-id="${parent.info.run_id}"] [data-component-id*="runnamecellrenderer"]`);
  await page.waitFor(`document.body.innerText.includes(${JSON.stringify(trials[0].info.run_name)})`);
  await page.click('input[placeholder="Search metric charts"]');
  await page.typeText('^val_accuracy$');
  // The parent has no val_accuracy of its own; it would only add an empty legend entry.
  await page.click(`[row-id="${parent.info.run_id}"] label:has(.is-visibility-toggle-checkbox)`);
  // Wide enough for the trials' names, and the one chart over the rest of the page.
  await page.drag('.react-resizable:has(.is-table-comparing-runs-mode) > :nth-child(2)', 40, 0);
  await page.drag('[data-testid="draggable-card-resize-handle"]', runsViewport.width, 180);
  // The chart's toolbar shows on hover only.
  await page.evaluate(
    `document.head.insertAdjacentHTML('beforeend', '<style>.modebar-container { display: none !important; }</style>')`,
  );
  await page.shoot(file);
}

/**
 * One colour per trial (the mlflow.runColor tag MLflow's UI reads) instead of MLflow's hash-picked ones, some of
 * them near twins. Trials that differ only in epochs share a hue, lighter for fewer epochs: the shorter trial is the
 * longer one's first epochs, so their lines coincide there and read as one curve.
 */
async function colourTrials(client: MlflowClient, trials: Run[]): Promise<void> {
  // ColorBrewer "Paired": light and dark of one hue.
  const pairs = [
    ['#a6cee3', '#1f78b4'],
    ['#fdbf6f', '#ff7f00'],
    ['#b2df8a', '#33a02c'],
    ['#fb9a99', '#e31a1c'],
    ['#cab2d6', '#6a3d9a'],
  ];
  const param = (r: Run, key: string) => r.data.params?.find((p) => p.key === key)?.value ?? '';
  const hueKey = (r: Run) =>
    JSON.stringify(
      (r.data.params ?? []).filter((p) => p.key !== 'training.epochs').sort((a, b) => a.key.localeCompare(b.key)),
    );
  const hues = [...new Set(trials.map(hueKey))].sort();
  for (const trial of trials) {
    const [light, dark] = pairs[hues.indexOf(hueKey(trial)) % pairs.length];
    const longest = Math.max(
      ...trials.filter((t) => hueKey(t) === hueKey(trial)).map((t) => Number(param(t, 'training.epochs'))),
    );
    const colour = Number(param(trial, 'training.epochs')) < longest ? light : dark;
    await client.logBatch(trial.info.run_id, { tags: [{ key: 'mlflow.runColor', value: colour }] });
  }
}

// MLflow 3's UI keeps its choices in localStorage (key_v<version>, JSON): the "Model training" side of the
// GenAI / Model training toggle, and the assistant panel closed (it opens by itself on a local server's first visit).
const uiSettings = `
  localStorage.setItem('mlflow.workflowType_v1', JSON.stringify('machine_learning'));
  localStorage.setItem('mlflow.assistant.panelOpen_v1', 'false');
  localStorage.setItem('mlflow.assistant.fab.autoOpenedOnFirstLoad_v1', 'true');
`;

interface Browser {
  newPage(): Promise<Page>;
  close(): Promise<void>;
}

interface Page {
  goto(url: string, viewport: Viewport): Promise<void>;
  /** Evaluates `expression` in the page until it is truthy. */
  waitFor(expression: string, timeoutMs?: number): Promise<void>;
  evaluate(expression: string): Promise<unknown>;
  /** Clicks the middle of the element `selector` finds, once there is one, with the mouse. */
  click(selector: string): Promise<void>;
  /** Drags the middle of the element `selector` finds by (dx, dy) pixels with the mouse. */
  drag(selector: string, dx: number, dy: number): Promise<void>;
  /** Types into the focused element. */
  typeText(text: string): Promise<void>;
  key(name: 'Enter' | 'Escape'): Promise<void>;
  shoot(file: string): Promise<void>;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

async function launch(chromium: string): Promise<Browser> {
  const profile = fs.mkdtempSync('/tmp/xp-chromium-');
  const proc = spawn(
    chromium,
    [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--hide-scrollbars',
      `--user-data-dir=${profile}`,
      '--remote-debugging-port=0',
      'about:blank',
    ],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  const exited = new Promise((resolve) => proc.once('exit', resolve));
  const wsUrl = await new Promise<string>((resolve, reject) => {
    let text = '';
    proc.stderr.on('data', (chunk: Buffer) => {
      text += chunk;
      const m = /DevTools listening on (ws:\S+)/.exec(text);
      if (m) resolve(m[1]);
    });
    proc.once('exit', (code) => reject(new Error(`${chromium} exited (${code}): ${text}`)));
  });
  const ws = new WebSocket(wsUrl);
  await new Promise((resolve, reject) => {
    ws.onopen = resolve;
    ws.onerror = reject;
  });
  let nextId = 1;
  const pending = new Map<number, { resolve(result: unknown): void; reject(error: Error): void }>();
  ws.onmessage = (event) => {
    const message = JSON.parse(String(event.data));
    const waiter = pending.get(message.id);
    if (!waiter) return;
    pending.delete(message.id);
    if (message.error) waiter.reject(new Error(`DevTools: ${message.error.message}`));
    else waiter.resolve(message.result);
  };
  // T: the result the DevTools protocol documents for `method`.
  const send = <T = unknown>(method: string, params: object = {}, sessionId?: string): Promise<T> => {
    const id = nextId++;
    ws.send(JSON.stringify({ id, method, params, sessionId }));
    return new Promise((resolve, reject) => pending.set(id, { resolve: (result) => resolve(result as T), reject }));
  };

  return {
    async newPage() {
      const { targetId } = await send<{ targetId: string }>('Target.createTarget', { url: 'about:blank' });
      const { sessionId } = await send<{ sessionId: string }>('Target.attachToTarget', { targetId, flatten: true });
      const call = <T = unknown>(method: string, params?: object) => send<T>(method, params, sessionId);
      await call('Page.enable');
      await call('Page.addScriptToEvaluateOnNewDocument', { source: uiSettings });
      let viewport: Viewport = { width: 800, height: 600 };
      const evaluate = async (expression: string) => {
        const r = await call<{
          result: { value?: unknown };
          exceptionDetails?: { text: string; exception?: { description?: string } };
        }>('Runtime.evaluate', { expression, awaitPromise: true, returnByValue: true });
        if (r.exceptionDetails)
          throw new Error(`${expression}: ${r.exceptionDetails.exception?.description ?? r.exceptionDetails.text}`);
        return r.result.value;
      };
      const mouse = (type: string, x: number, y: number) =>
        call('Input.dispatchMouseEvent', {
          type,
          x,
          y,
          button: 'left',
          buttons: type === 'mouseReleased' ? 0 : 1,
          clickCount: 1,
        });
      const page: Page = {
        evaluate,
        async goto(url, size) {
          viewport = size;
          await call('Emulation.setDeviceMetricsOverride', { ...viewport, deviceScaleFactor: 1, mobile: false });
          // From a blank page, so that each page starts afresh rather than as a change of the hash.
          await call('Page.navigate', { url: 'about:blank' });
          await call('Page.navigate', { url });
        },
        async waitFor(expression, timeoutMs = 90_000) {
          const end = Date.now() + timeoutMs;
          while (!(await evaluate(`Boolean(${expression})`).catch(() => false))) {
            if (Date.now() > end) {
              await page.shoot('/tmp/xp-screenshot-timeout.png');
              throw new Error(
                `timed out waiting for ${expression} (the page as it was: /tmp/xp-screenshot-timeout.png)`,
              );
            }
            await sleep(250);
          }
        },
        async click(selector) {
          await page.drag(selector, 0, 0);
        },
        async drag(selector, dx, dy) {
          await page.waitFor(`document.querySelector(${JSON.stringify(selector)})`);
          const { x, y } = (await evaluate(`(() => {
            const r = document.querySelector(${JSON.stringify(selector)}).getBoundingClientRect();
            return { x: r.x + r.width / 2, y: r.y + r.height / 2 };
          })()`)) as { x: number; y: number };
          await call('Input.dispatchMouseEvent', { type: 'mouseMoved', x, y });
          await mouse('mousePressed', x, y);
          for (let i = 1; i <= 10 && (dx || dy); i++) await mouse('mouseMoved', x + (dx * i) / 10, y + (dy * i) / 10);
          await mouse('mouseReleased', x + dx, y + dy);
          // Off the page's controls again: hovering a chart shows its toolbar.
          await call('Input.dispatchMouseEvent', { type: 'mouseMoved', x: viewport.width - 1, y: viewport.height - 1 });
          await sleep(300);
        },
        async typeText(text) {
          await call('Input.insertText', { text });
          await sleep(300);
        },
        async key(name) {
          const code = { Enter: 13, Escape: 27 }[name];
          for (const type of ['keyDown', 'keyUp']) {
            await call('Input.dispatchKeyEvent', {
              type,
              key: name,
              code: name,
              windowsVirtualKeyCode: code,
              ...(name === 'Enter' && type === 'keyDown' ? { text: '\r' } : {}),
            });
          }
          await sleep(300);
        },
        async shoot(file) {
          // Charts animate in and fonts settle.
          await sleep(1500);
          const { data } = await call<{ data: string }>('Page.captureScreenshot', { format: 'png' });
          fs.writeFileSync(file, Buffer.from(data, 'base64'));
          if (!file.startsWith('/tmp/')) console.log(path.relative(process.cwd(), file));
        },
      };
      return page;
    },
    async close() {
      await send('Browser.close').catch(() => proc.kill());
      await exited;
      ws.close();
      // Helper processes may still be writing to the profile for a moment.
      fs.rmSync(profile, { recursive: true, force: true, maxRetries: 10, retryDelay: 200 });
    },
  };
}

// Node 20 has WebSocket behind a flag (Node 22 by default): run again with it.
if (typeof WebSocket === 'undefined') {
  const child = spawn(process.execPath, ['--experimental-websocket', ...process.execArgv, ...process.argv.slice(1)], {
    stdio: 'inherit',
  });
  child.on('exit', (code) => process.exit(code ?? 1));
} else {
  await main(process.argv[2] ?? 'dropout-epochs-sweep');
}
