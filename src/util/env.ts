// Settings read from the environment, read the same way everywhere.

/** A number of seconds from the environment; unset, empty, negative or not a number: the fallback. */
export function secondsFromEnv(env: NodeJS.ProcessEnv, name: string, fallback: number): number {
  const seconds = Number(env[name]);
  return env[name] && Number.isFinite(seconds) && seconds >= 0 ? seconds : fallback;
}
