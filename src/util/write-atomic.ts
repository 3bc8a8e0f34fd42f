// Replaces a file's content all at once: readers (an editor, `xp run` on the same file) see the old text or the new,
// never a half-written file, and an interrupted write (or a full disk) leaves the old one, or none.
import fs from 'node:fs';
import path from 'node:path';

/**
 * Writes `data` to `file` through a temporary file in the same folder, keeping the file's mode; a link's target is
 * replaced, not the link. A file that does not exist yet is created with the default mode (the umask applied).
 */
export function writeFileAtomic(file: string, data: string | NodeJS.ArrayBufferView): void {
  let target = file;
  let mode: number | undefined;
  try {
    target = fs.realpathSync(file);
    mode = fs.statSync(target).mode & 0o7777;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
  }
  const temporary = path.join(path.dirname(target), `.${path.basename(target)}.${process.pid}.tmp`);
  try {
    fs.writeFileSync(temporary, data, { flag: 'wx', ...(mode === undefined ? {} : { mode }) });
    if (mode !== undefined) fs.chmodSync(temporary, mode);
    fs.renameSync(temporary, target);
  } catch (error) {
    fs.rmSync(temporary, { force: true });
    throw error;
  }
}
