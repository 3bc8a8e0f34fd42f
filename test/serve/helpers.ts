// Shared by the `xp serve` tests: starting it as users do, and asking it for predictions.
import { expect } from 'vitest';
import type { xpIn } from '../export/tiny-run.ts';

export type Serving = ReturnType<ReturnType<typeof xpIn>>;

export interface Prediction {
  class: string;
  probabilities: Record<string, number>;
}

/** `xp serve <target>` on a free port of 127.0.0.1; resolves once it prints where it listens. */
export async function startServe(
  xp: ReturnType<typeof xpIn>,
  target: string,
  extra: string[] = [],
): Promise<{ url: string; stdout: () => string; process: Serving }> {
  const child = xp(['serve', target, '--port', '0', ...extra]);
  let out = '';
  const url = await new Promise<string>((resolve, reject) => {
    child.stdout?.on('data', (chunk: Buffer) => {
      out += chunk;
      const m = /listening on (http:\/\/127\.0\.0\.1:\d+)/.exec(out);
      if (m) resolve(m[1]);
    });
    void child.then((r) => reject(new Error(`xp serve ended (${r.exitCode}): ${r.stderr}`)));
  });
  return { url, stdout: () => out, process: child };
}

export async function invoke(
  url: string,
  body: BodyInit,
  type: string,
): Promise<{ status: number; json: { predictions?: Prediction[]; message?: string } }> {
  const r = await fetch(`${url}/invocations`, { method: 'POST', body, headers: { 'content-type': type } });
  return { status: r.status, json: await r.json() };
}

/** The predictions are `want`'s, in order: the same classes, probabilities within 1e-6. */
export function expectAnswers(predictions: Prediction[] | undefined, want: Prediction[]) {
  expect(predictions).toHaveLength(want.length);
  for (const [i, w] of want.entries()) {
    const got = (predictions as Prediction[])[i];
    expect(got.class).toBe(w.class);
    expect(Object.keys(got.probabilities)).toEqual(Object.keys(w.probabilities));
    for (const c of Object.keys(w.probabilities))
      expect(Math.abs(got.probabilities[c] - w.probabilities[c])).toBeLessThan(1e-6);
  }
}
