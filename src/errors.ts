// One error hierarchy: the CLI prints `message` (and `hint`) of an XpError without a stack trace.

export class XpError extends Error {
  hint?: string;
  /** The process's exit code when this ends a command: 1, or 2 for what the user must allow or fix in the call. */
  exitCode: number;
  constructor(message: string, options: { cause?: unknown; hint?: string; exitCode?: number } = {}) {
    super(message, { cause: options.cause });
    this.name = 'XpError';
    this.hint = options.hint;
    this.exitCode = options.exitCode ?? 1;
  }
}

export class ConfigError extends XpError {
  constructor(message: string, options?: { cause?: unknown; hint?: string }) {
    super(message, options);
    this.name = 'ConfigError';
  }
}

export class DataError extends XpError {
  constructor(message: string, options?: { cause?: unknown; hint?: string }) {
    super(message, options);
    this.name = 'DataError';
  }
}

export class ModelError extends XpError {
  constructor(message: string, options?: { cause?: unknown; hint?: string }) {
    super(message, options);
    this.name = 'ModelError';
  }
}

export class TrackingError extends XpError {
  constructor(message: string, options?: { cause?: unknown; hint?: string }) {
    super(message, options);
    this.name = 'TrackingError';
  }
}

/** A fetched URL whose bytes disagree with the lock (xp.lock), or a lock that cannot be used. */
export class LockError extends XpError {
  constructor(message: string, options?: { cause?: unknown; hint?: string }) {
    super(message, options);
    this.name = 'LockError';
  }
}

/** A stop (Ctrl-C, SIGTERM) ended the work before it was done: nothing is wrong, the runs end KILLED. */
export class Interrupted extends XpError {
  constructor(message: string) {
    super(message, { exitCode: 130 });
    this.name = 'Interrupted';
  }
}
