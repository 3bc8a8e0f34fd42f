// MLflow's scoring protocol as xp serve parses it, without a server: every accepted form gives the same images in
// order, and every refused body says why, naming the item.
import { describe, expect, it } from 'vitest';
import { BadRequest, errorBody, parseInvocation, predictionsBody } from '../../src/serve/protocol.ts';

const jpeg = Buffer.from([0xff, 0xd8, 0xff, 0xe0, 1, 2, 3]);
const png = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 9, 9]);
const [a, b] = [jpeg.toString('base64'), png.toString('base64')];
const json = (body: unknown) => parseInvocation(Buffer.from(JSON.stringify(body)), 'application/json', 4);

function refusal(run: () => unknown): BadRequest {
  try {
    run();
  } catch (error) {
    expect(error).toBeInstanceOf(BadRequest);
    return error as BadRequest;
  }
  throw new Error('not refused');
}

describe('parseInvocation', () => {
  it('takes a raw image body as one image, told by its bytes or its content type', () => {
    expect(parseInvocation(jpeg, 'image/jpeg', 4)).toEqual([jpeg]);
    expect(parseInvocation(png, undefined, 4)).toEqual([png]);
    expect(parseInvocation(png, 'application/octet-stream', 4)).toEqual([png]);
    // Named an image but not one: decoding says what is wrong with it.
    expect(parseInvocation(Buffer.from('abc'), 'image/png', 4)).toEqual([Buffer.from('abc')]);
  });

  it.each([
    ['instances of b64', { instances: [{ b64: a }, { b64: b }] }],
    ['instances of strings', { instances: [a, b] }],
    ['instances of named inputs', { instances: [{ image: { b64: a } }, { image: b }] }],
    ['inputs list', { inputs: [{ b64: a }, b] }],
    ['inputs column', { inputs: { image: [{ b64: a }, { b64: b }] } }],
    ['dataframe_split', { dataframe_split: { index: [0, 1], columns: ['image'], data: [[a], [b]] } }],
    ['dataframe_records', { dataframe_records: [{ image: a }, { image: b }] }],
    ['params beside the input', { instances: [a, b], params: { k: 1 } }],
  ])('reads %s', (_form, body) => {
    expect(json(body)).toEqual([jpeg, png]);
  });

  it.each([
    ['a body neither JSON nor an image', Buffer.from('hello'), 'text/plain', /neither JSON nor an image/],
    ['JSON that does not parse', Buffer.from('{"instances": ['), 'application/json', /not JSON/],
    ['JSON that is a list', Buffer.from('[1]'), 'application/json', /must be an object/],
    ['two input fields', Buffer.from(`{"instances": [], "inputs": []}`), 'application/json', /exactly one of/],
    ['no image', Buffer.from('{"instances": []}'), 'application/json', /holds no image/],
    ['a number for an image', Buffer.from('{"instances": [3]}'), 'application/json', /instances\[0\] is not an image/],
    [
      'text that is not base64',
      Buffer.from(`{"inputs": ["${a}", "%%"]}`),
      'application/json',
      /inputs\[1\] is not base64/,
    ],
    [
      'too many images',
      Buffer.from(JSON.stringify({ instances: [a, a, a, a, a] })),
      undefined,
      /5 images in one request; at most 4/,
    ],
  ])('refuses %s with 400', (_what, body, type, message) => {
    const error = refusal(() => parseInvocation(body, type, 4));
    expect(error.status).toBe(400);
    expect(error.message).toMatch(message);
  });
});

describe('answers', () => {
  it("write each image's class and probabilities, and MLflow's error body", () => {
    const body = JSON.parse(predictionsBody(['cats', 'dogs'], [Float32Array.from([0.25, 0.75])]));
    expect(body).toEqual({ predictions: [{ class: 'dogs', probabilities: { cats: 0.25, dogs: 0.75 } }] });
    expect(JSON.parse(errorBody(413, 'too big'))).toEqual({
      error_code: 'RESOURCE_LIMIT_EXCEEDED',
      message: 'too big',
    });
  });
});
