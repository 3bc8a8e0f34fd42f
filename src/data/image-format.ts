// What a file named as an image holds, told by its first bytes (nothing decoded): the formats decoding reads (sharp:
// JPEG, PNG, GIF, WebP), BMP (listed as Keras lists it, but not decoded), or none. The scan uses it so that a class
// folder whose files cannot be decoded is refused before training, by `xp check` too.
import { open } from 'node:fs/promises';

export const DECODED_FORMATS = ['jpeg', 'png', 'gif', 'webp'] as const;
export type ImageFormat = (typeof DECODED_FORMATS)[number] | 'bmp';

/** The format of the file's first bytes, or why there is none ('empty file', 'not an image'). */
export async function imageFormat(file: string): Promise<ImageFormat | 'empty file' | 'not an image'> {
  const head = Buffer.alloc(12);
  // The scan lists regular files only; a file that cannot be opened is one decoding would skip.
  const handle = await open(file, 'r').catch(() => undefined);
  if (!handle) return 'not an image';
  let read: number;
  try {
    ({ bytesRead: read } = await handle.read(head, 0, head.length, 0));
  } catch {
    return 'not an image';
  } finally {
    await handle.close();
  }
  return read === 0 ? 'empty file' : formatOf(head);
}

/** The format that bytes starting with `head` (12 bytes suffice) are in, or 'not an image'. */
export function formatOf(head: Uint8Array): ImageFormat | 'not an image' {
  const starts = (...bytes: number[]) => bytes.every((b, i) => head[i] === b);
  const text = (from: number, to: number) => Buffer.from(head.subarray(from, to)).toString('latin1');
  if (starts(0xff, 0xd8, 0xff)) return 'jpeg';
  if (starts(0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a)) return 'png';
  if (text(0, 4) === 'GIF8') return 'gif';
  if (text(0, 4) === 'RIFF' && text(8, 12) === 'WEBP') return 'webp';
  if (text(0, 2) === 'BM') return 'bmp';
  return 'not an image';
}

/** undefined when one of `files` is in a decoded format; else the first file and what it is. */
export async function noDecodableImage(files: readonly string[]): Promise<{ file: string; why: string } | undefined> {
  let first: { file: string; why: string } | undefined;
  for (const file of files) {
    const format = await imageFormat(file);
    if ((DECODED_FORMATS as readonly string[]).includes(format)) return undefined;
    first ??= { file, why: format === 'bmp' ? 'a BMP image, which xp does not decode' : format };
  }
  return first;
}
