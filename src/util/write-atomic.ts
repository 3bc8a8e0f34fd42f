// Replaces a file's content all at once: readers (an editor, `xp run` on the same file) see the old text or the new,
// never a half-written file, and an interrupted write leaves the old one.
import fs from 'node:fs';
import path from 'node:path';

/** Writes `text` to `file` through a temporary file in the same folder, keeping the file's mode; a link's target is replaced, not the link. */
export function writeFileAtomic(file: string, text: string): void {
  const target = fs.realpathSync(file);
  const mode = fs.statSync(target).mode & 0o7777;
  const temporary = path.join(path.dirname(target), `.${path.basename(target)}.${process.pid}.tmp`);
  try {
    fs.writeFileSync(temporary, text, { flag: 'wx', mode });
    fs.chmodSync(temporary, mode);
    fs.renameSync(temporary, target);
  } catch (error) {
    fs.rmSync(temporary, { force: true });
    throw error;
  }
}
