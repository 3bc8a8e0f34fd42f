// Unpacks a zip archive by streaming each entry from disk through zlib, so memory stays flat whatever the archive
// holds. An archive is checked against size limits before anything is written (declared sizes of each entry, of
// all entries, and their compression ratio), and each entry's output is cut at its declared size, so a zip bomb
// fails with a clear error instead of filling memory or the disk. Entries never land outside the target folder,
// files and folders get the modes the umask gives (0644/0755-like), and symbolic-link entries are not created.
import { createWriteStream } from 'node:fs';
import { mkdir, open, writeFile, type FileHandle } from 'node:fs/promises';
import path from 'node:path';
import { Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { crc32, createInflateRaw, inflateRawSync } from 'node:zlib';
import { DataError, type XpError } from '../errors.ts';
import { diskFull, freeSpaceHint, isDiskFull } from '../util/disk.ts';

export interface ZipLimits {
  /** Largest uncompressed size of one entry, in bytes. */
  entryBytes: number;
  /** Largest uncompressed size of all entries together, in bytes. */
  totalBytes: number;
  /** Largest uncompressed/compressed ratio of an entry above 1 MiB. */
  ratio: number;
  /** Most entries in one archive. */
  entries: number;
}

const MiB = 1024 * 1024;
/** Entries up to this size are inflated in memory in one call; larger ones are streamed. */
const SMALL_ENTRY = 4 * MiB;

/** Defaults fit image data sets; XP_UNZIP_MAX_ENTRY_MB, XP_UNZIP_MAX_TOTAL_MB and XP_UNZIP_MAX_RATIO raise them. */
export function zipLimits(env: NodeJS.ProcessEnv = process.env): ZipLimits {
  const number = (name: string, fallback: number): number => {
    const value = Number(env[name]);
    return env[name] && Number.isFinite(value) && value > 0 ? value : fallback;
  };
  return {
    entryBytes: number('XP_UNZIP_MAX_ENTRY_MB', 1024) * MiB,
    totalBytes: number('XP_UNZIP_MAX_TOTAL_MB', 20 * 1024) * MiB,
    ratio: number('XP_UNZIP_MAX_RATIO', 100),
    entries: 1_000_000,
  };
}

interface Entry {
  name: string;
  method: number;
  flags: number;
  crc: number;
  compressedSize: number;
  size: number;
  localHeaderOffset: number;
  isDirectory: boolean;
  isSymlink: boolean;
}

const LIMITS_HINT =
  'The archive is larger than xp unpacks by default, or a zip bomb. If you trust it, raise XP_UNZIP_MAX_ENTRY_MB, XP_UNZIP_MAX_TOTAL_MB or XP_UNZIP_MAX_RATIO; or unpack it yourself and point data.train/validation at the folders.';

/** Unpacks `zipFile` into the existing folder `dest`; `source` (the URL) names the archive in errors. */
export async function extractZip(
  zipFile: string,
  dest: string,
  source: string,
  opts: { limits?: ZipLimits; signal?: AbortSignal } = {},
): Promise<void> {
  const limits = opts.limits ?? zipLimits();
  const corrupt = (why: string) =>
    new DataError(`Could not unpack ${source}: ${why}`, {
      hint: 'data.url must point to a .zip archive; download it again or check the file.',
    });
  const archive = await open(zipFile, 'r');
  try {
    await extractAll(archive, dest, source, limits, corrupt, opts.signal);
  } finally {
    await archive.close();
  }
}

async function extractAll(
  archive: FileHandle,
  dest: string,
  source: string,
  limits: ZipLimits,
  corrupt: (why: string) => DataError,
  signal: AbortSignal | undefined,
): Promise<void> {
  const { entries, archiveBytes } = await readCentralDirectory(archive, corrupt, limits);
  checkLimits(entries, archiveBytes, source, limits);

  const root = path.resolve(dest);
  for (const entry of entries) {
    signal?.throwIfAborted();
    const target = insideTarget(root, entry.name);
    if (!target) {
      throw new DataError(
        `Refusing to unpack ${source}: entry ${JSON.stringify(entry.name)} would be written outside the data folder`,
        {
          hint: 'The archive is malformed or hostile; check data.url.',
        },
      );
    }
    if (entry.isSymlink) continue; // a link could point anywhere; data sets hold files
    if (entry.flags & 1) throw corrupt(`entry ${entry.name} is encrypted`);
    if (!entry.isDirectory && entry.method !== 0 && entry.method !== 8) {
      throw corrupt(
        `entry ${entry.name} uses compression method ${entry.method} (only stored and deflated are supported)`,
      );
    }
    try {
      await mkdir(entry.isDirectory ? target : path.dirname(target), { recursive: true });
      if (!entry.isDirectory) await extractEntry(archive, entry, target, corrupt);
    } catch (error) {
      // e.g. a file entry `a` and an entry `a/b` in one archive
      if (error instanceof DataError) throw error;
      if (isDiskFull(error)) throw diskFull(error, target, freeSpaceHint(target, 'XP_DATA_DIR'));
      throw corrupt(`entry ${entry.name}: ${(error as Error).message}`);
    }
  }
}

/** Declared sizes against the limits, before anything is written; extractEntry holds entries to them. */
function checkLimits(entries: Entry[], archiveBytes: number, source: string, limits: ZipLimits): void {
  const refuse = (what: string) => new DataError(`Refusing to unpack ${source}: ${what}`, { hint: LIMITS_HINT });
  const ratio = (size: number, packed: number) => Math.round(size / Math.max(1, packed));
  let total = 0;
  for (const entry of entries) {
    if (entry.isDirectory || entry.isSymlink) continue;
    if (entry.size > limits.entryBytes)
      throw refuse(
        `entry ${entry.name} is ${gib(entry.size)} uncompressed, above the limit of ${gib(limits.entryBytes)} per entry`,
      );
    if (entry.size > MiB && entry.size > limits.ratio * Math.max(1, entry.compressedSize)) {
      throw refuse(
        `entry ${entry.name} expands ${ratio(entry.size, entry.compressedSize)}:1 (${gib(entry.size)}), above the limit of ${limits.ratio}:1`,
      );
    }
    total += entry.size;
    if (total > limits.totalBytes) throw refuse(`its entries add up to more than ${gib(limits.totalBytes)}`);
  }
  // Many small entries that each pass the ratio check can still add up to a bomb.
  if (total > 64 * MiB && total > limits.ratio * archiveBytes) {
    throw refuse(
      `its entries expand ${ratio(total, archiveBytes)}:1 overall (${gib(total)}), above the limit of ${limits.ratio}:1`,
    );
  }
}

async function extractEntry(
  archive: FileHandle,
  entry: Entry,
  target: string,
  corrupt: (why: string) => DataError,
): Promise<void> {
  const header = Buffer.alloc(30);
  await archive.read(header, 0, 30, entry.localHeaderOffset);
  if (header.readUInt32LE(0) !== 0x04034b50) throw corrupt(`entry ${entry.name} has no local header`);
  const dataStart = entry.localHeaderOffset + 30 + header.readUInt16LE(26) + header.readUInt16LE(28);
  const pastDeclared = () => corrupt(`entry ${entry.name} inflates past its declared ${entry.size} bytes`);
  const check = (written: number, crc: number): void => {
    if (written !== entry.size)
      throw corrupt(`entry ${entry.name} holds ${written} bytes, not the declared ${entry.size}`);
    if (crc !== entry.crc) throw corrupt(`entry ${entry.name} fails its CRC check`);
  };
  const failed = (error: unknown): XpError => {
    if (error instanceof DataError) return error;
    // Not the archive's fault: the data directory's disk is full.
    if (isDiskFull(error)) return diskFull(error, target, freeSpaceHint(target, 'XP_DATA_DIR')) as XpError;
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ERR_BUFFER_TOO_LARGE') return pastDeclared();
    return corrupt(
      code === 'EEXIST' ? `entry ${entry.name} appears twice` : `entry ${entry.name}: ${(error as Error).message}`,
    );
  };

  // Small entries (most images) in one read: a stream per file costs more than the file.
  if (entry.size <= SMALL_ENTRY && entry.compressedSize <= SMALL_ENTRY) {
    const compressed = Buffer.alloc(entry.compressedSize);
    const { bytesRead } = await archive.read(compressed, 0, compressed.length, dataStart);
    if (bytesRead !== compressed.length) throw corrupt(`entry ${entry.name} is truncated`);
    try {
      // maxOutputLength stops inflating at the declared size, as the guard below does for streams.
      const data =
        entry.method === 8 ? inflateRawSync(compressed, { maxOutputLength: Math.max(1, entry.size) }) : compressed;
      check(data.length, crc32(data));
      await writeFile(target, data, { flag: 'wx' });
    } catch (error) {
      throw failed(error);
    }
    return;
  }

  let written = 0;
  let crc = 0;
  // Stops the stream as soon as an entry inflates past its declared size: declared sizes passed the limits.
  const guard = new Transform({
    transform(chunk: Buffer, _encoding, callback) {
      written += chunk.length;
      if (written > entry.size) return callback(pastDeclared());
      crc = crc32(chunk, crc);
      callback(null, chunk);
    },
  });
  const input = archive.createReadStream({
    start: dataStart,
    end: dataStart + entry.compressedSize - 1,
    autoClose: false,
  });
  const output = createWriteStream(target, { flags: 'wx' });
  try {
    await (entry.method === 8 ? pipeline(input, createInflateRaw(), guard, output) : pipeline(input, guard, output));
  } catch (error) {
    throw failed(error);
  }
  check(written, crc);
}

/** The absolute path of `name` under `root`, or undefined when it would leave `root`. */
function insideTarget(root: string, name: string): string | undefined {
  const normalized = name.replace(/\\/g, '/');
  if (normalized.includes('\0') || normalized.startsWith('/') || /^[A-Za-z]:/.test(normalized)) return undefined;
  if (normalized.split('/').includes('..')) return undefined;
  const target = path.resolve(root, normalized);
  return target.startsWith(root + path.sep) ? target : undefined;
}

async function readCentralDirectory(
  file: FileHandle,
  corrupt: (why: string) => DataError,
  limits: ZipLimits,
): Promise<{ entries: Entry[]; archiveBytes: number }> {
  const { size } = await file.stat();
  const read = async (position: number, length: number): Promise<Buffer> => {
    if (position < 0 || length < 0 || position + length > size) throw corrupt('it is truncated or not a zip file');
    const buffer = Buffer.alloc(length);
    await file.read(buffer, 0, length, position);
    return buffer;
  };

  // The end-of-central-directory record sits in the last 22 bytes plus an optional comment of up to 64 KiB.
  const tailStart = Math.max(0, size - 22 - 0xffff);
  const tail = await read(tailStart, size - tailStart);
  let eocd = -1;
  for (let i = tail.length - 22; i >= 0; i--) {
    if (tail.readUInt32LE(i) === 0x06054b50) {
      eocd = i;
      break;
    }
  }
  if (eocd < 0) throw corrupt('it is not a zip file (no central directory)');
  let count = tail.readUInt16LE(eocd + 10);
  let cdSize = tail.readUInt32LE(eocd + 12);
  let cdOffset = tail.readUInt32LE(eocd + 16);
  if (count === 0xffff || cdSize === 0xffffffff || cdOffset === 0xffffffff) {
    const locator = await read(tailStart + eocd - 20, 20);
    if (locator.readUInt32LE(0) !== 0x07064b50) throw corrupt('its zip64 locator is missing');
    const record = await read(Number(locator.readBigUInt64LE(8)), 56);
    if (record.readUInt32LE(0) !== 0x06064b50) throw corrupt('its zip64 directory is missing');
    count = Number(record.readBigUInt64LE(32));
    cdSize = Number(record.readBigUInt64LE(40));
    cdOffset = Number(record.readBigUInt64LE(48));
  }
  if (count > limits.entries)
    throw new DataError(`Refusing to unpack an archive of ${count} entries (limit ${limits.entries})`, {
      hint: LIMITS_HINT,
    });

  const cd = await read(cdOffset, cdSize);
  const entries: Entry[] = [];
  let at = 0;
  for (let i = 0; i < count; i++) {
    if (at + 46 > cd.length || cd.readUInt32LE(at) !== 0x02014b50) throw corrupt('its central directory is damaged');
    const nameLength = cd.readUInt16LE(at + 28);
    const extraLength = cd.readUInt16LE(at + 30);
    const commentLength = cd.readUInt16LE(at + 32);
    if (at + 46 + nameLength + extraLength > cd.length) throw corrupt('its central directory is damaged');
    const flags = cd.readUInt16LE(at + 8);
    const name = cd.toString(flags & 0x800 ? 'utf8' : 'latin1', at + 46, at + 46 + nameLength);
    let compressedSize = cd.readUInt32LE(at + 20);
    let entrySize = cd.readUInt32LE(at + 24);
    let localHeaderOffset = cd.readUInt32LE(at + 42);
    // Zip64: the sizes and offset that overflow 32 bits move, in this order, into extra field 0x0001.
    const extra = cd.subarray(at + 46 + nameLength, at + 46 + nameLength + extraLength);
    for (let e = 0; e + 4 <= extra.length; e += 4 + extra.readUInt16LE(e + 2)) {
      if (extra.readUInt16LE(e) !== 1) continue;
      let field = e + 4;
      const next = (): number => {
        if (field + 8 > extra.length) throw corrupt(`entry ${name} has a damaged zip64 field`);
        const value = Number(extra.readBigUInt64LE(field));
        field += 8;
        return value;
      };
      if (entrySize === 0xffffffff) entrySize = next();
      if (compressedSize === 0xffffffff) compressedSize = next();
      if (localHeaderOffset === 0xffffffff) localHeaderOffset = next();
    }
    const unixMode = cd.readUInt8(at + 5) === 3 ? cd.readUInt32LE(at + 38) >>> 16 : 0;
    entries.push({
      name,
      method: cd.readUInt16LE(at + 10),
      flags,
      crc: cd.readUInt32LE(at + 16),
      compressedSize,
      size: entrySize,
      localHeaderOffset,
      isDirectory: name.endsWith('/') || name.endsWith('\\'),
      isSymlink: (unixMode & 0o170000) === 0o120000,
    });
    if (localHeaderOffset + 30 + compressedSize > size) throw corrupt(`entry ${name} reaches past the end of the file`);
    at += 46 + nameLength + extraLength + commentLength;
  }
  return { entries, archiveBytes: size };
}

const gib = (bytes: number): string =>
  bytes >= 1024 * MiB ? `${(bytes / (1024 * MiB)).toFixed(1)} GiB` : `${(bytes / MiB).toFixed(1)} MiB`;
