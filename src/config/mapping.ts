// What a parsed YAML or JSON value is a mapping: a plain object, not a list or null.

export const isMapping = (v: unknown): v is Record<string, unknown> =>
  typeof v === 'object' && v !== null && !Array.isArray(v);
