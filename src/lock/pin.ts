// The one place every byte xp fetches by URL is checked against the run's lock (xp.lock, as deno.lock): experiment
// files, the files they extend, dataset archives and weight files. Fetchers call `pin` with what they got; the CLI
// decides which lock (if any) applies to this process with `usePin`. Without one, nothing is checked.

/** Checks (or records) that `url` served bytes with this sha256; throws an XpError on a mismatch. */
export type Pin = (url: string, sha256: string) => Promise<void>;

let current: Pin = async () => {};

/** Sets the lock check for the rest of the process (the CLI, once it knows the experiment and the lock flags). */
export function usePin(p: Pin): void {
  current = p;
}

export const pin: Pin = (url, sha256) => current(url, sha256);
