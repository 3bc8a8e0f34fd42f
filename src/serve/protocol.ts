// MLflow's scoring protocol as `xp serve` speaks it: what a POST /invocations body holds (images, as MLflow clients,
// TensorFlow Serving clients and curl send them) and how predictions are written back.
import { DECODED_FORMATS, formatOf } from '../data/image-format.ts';

/** A request the server refuses, with the status and the sentence it answers. */
export class BadRequest extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
    this.name = 'BadRequest';
  }
}

// MLflow's scoring server takes exactly one of these (plus `params`, which a classifier has no use for).
const FORMATS = ['instances', 'inputs', 'dataframe_split', 'dataframe_records'] as const;

const ITEM_HINT = 'give {"b64": "<base64 image>"}, or the base64 string itself';

/**
 * The images of an invocation body: a raw JPEG/PNG/GIF/WebP body is one image; a JSON body lists them under one of
 * MLflow's input fields, each `{"b64": ...}`, a base64 string, or a one-column row holding either. More than
 * `maxImages` is refused before anything is decoded.
 */
export function parseInvocation(body: Buffer, contentType: string | undefined, maxImages: number): Buffer[] {
  const mime = (contentType ?? '').split(';')[0].trim().toLowerCase();
  const format = formatOf(body.subarray(0, 12));
  if (mime !== 'application/json' && (DECODED_FORMATS as readonly string[]).includes(format)) return [body];
  if (mime.startsWith('image/')) return [body]; // named an image: decoding says what is wrong with it
  let json: unknown;
  try {
    json = JSON.parse(body.toString('utf8'));
  } catch (error) {
    throw new BadRequest(
      400,
      mime === 'application/json'
        ? `the body is not JSON: ${(error as Error).message}`
        : `the body is neither JSON nor an image (${DECODED_FORMATS.join(', ')})`,
    );
  }
  const items = itemsOf(json);
  if (items.length === 0) throw new BadRequest(400, 'the request holds no image');
  if (items.length > maxImages)
    throw new BadRequest(400, `${items.length} images in one request; at most ${maxImages} (--max-images)`);
  return items.map(({ where, value }) => base64Image(where, value));
}

interface Item {
  where: string; // how the error names it, e.g. instances[2]
  value: unknown;
}

function itemsOf(json: unknown): Item[] {
  if (!isObject(json))
    throw new BadRequest(400, `the JSON body must be an object with one of the fields ${FORMATS.join(', ')}`);
  const given = FORMATS.filter((f) => f in json);
  if (given.length !== 1)
    throw new BadRequest(
      400,
      `the JSON body must have exactly one of the fields ${FORMATS.join(', ')} (it has ${Object.keys(json).join(', ') || 'none'})`,
    );
  const [field] = given;
  const value = json[field];
  const list = (v: unknown, where: string): Item[] => {
    if (!Array.isArray(v)) throw new BadRequest(400, `${where} must be a list of images`);
    return v.map((item, i) => ({ where: `${where}[${i}]`, value: item }));
  };
  if (field === 'instances' || field === 'dataframe_records') return list(value, field);
  if (field === 'inputs') {
    // TensorFlow Serving's columnar form names its one input: {"inputs": {"image": [...]}}.
    if (isObject(value) && !('b64' in value)) {
      const keys = Object.keys(value);
      if (keys.length !== 1) throw new BadRequest(400, `inputs must name one input (it names ${keys.join(', ')})`);
      return list(value[keys[0]], `inputs.${keys[0]}`);
    }
    return Array.isArray(value) ? list(value, field) : [{ where: field, value }];
  }
  // dataframe_split: {"columns": ["image"], "data": [["<base64>"], ...]}, as pandas writes a one-column frame.
  if (!isObject(value)) throw new BadRequest(400, 'dataframe_split must be {"columns": [...], "data": [[...], ...]}');
  return list(value.data, 'dataframe_split.data');
}

function base64Image(where: string, value: unknown): Buffer {
  let v = value;
  // A one-column row or named input ({"image": {"b64": ...}}, ["<base64>"]) stands for its value.
  if (Array.isArray(v) && v.length === 1) v = v[0];
  if (isObject(v) && !('b64' in v) && Object.keys(v).length === 1) v = Object.values(v)[0];
  if (isObject(v) && Object.keys(v).length === 1 && 'b64' in v) v = v.b64;
  if (typeof v !== 'string') throw new BadRequest(400, `${where} is not an image: ${ITEM_HINT}`);
  const text = v.replace(/\s+/g, '');
  if (!/^[A-Za-z0-9+/_-]*={0,2}$/.test(text)) throw new BadRequest(400, `${where} is not base64: ${ITEM_HINT}`);
  return Buffer.from(text, 'base64');
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/** The answer MLflow's clients read: per image, its class and the probability of each class. */
export function predictionsBody(classNames: readonly string[], probabilities: readonly Float32Array[]): string {
  return JSON.stringify({
    predictions: probabilities.map((p) => ({
      class: classNames[p.indexOf(Math.max(...p))],
      probabilities: Object.fromEntries(classNames.map((c, j) => [c, p[j]])),
    })),
  });
}

/** MLflow's error body, so its clients show the message. */
export function errorBody(status: number, message: string): string {
  const code = status === 413 ? 'RESOURCE_LIMIT_EXCEEDED' : status < 500 ? 'BAD_REQUEST' : 'INTERNAL_ERROR';
  return JSON.stringify({ error_code: code, message });
}
