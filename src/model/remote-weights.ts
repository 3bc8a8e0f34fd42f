// `backbone.weights` given as the https URL of a Keras .h5 file: downloaded once into xp's cache
// (content-addressed, pinned in the lock like every fetched byte) and then read as a local .h5 file.
import { LockError, ModelError, XpError } from '../errors.ts';
import { remoteFile } from '../remote/cache.ts';
import { isUrl } from '../remote/url.ts';

/** Weight files are large, but not this large: InceptionV3's whole .h5 is under 100 MB. */
export const MAX_WEIGHTS_BYTES = 4 * 1024 ** 3;

/** The local file of `weights`: the cached download of a URL, or `weights` itself (nsfwjs, imagenet, a path). */
export async function localWeights(weights: string, opts: { reload?: boolean } = {}): Promise<string> {
  if (!isUrl(weights)) return weights;
  try {
    const onDownload = (url: string) =>
      process.stderr.write(`Downloading the backbone weights ${url} into the cache\n`);
    return (await remoteFile(weights, { maxBytes: MAX_WEIGHTS_BYTES, reload: opts.reload, onDownload })).file;
  } catch (error) {
    // A lock mismatch stays what it is: it ends the command with its own message and exit code.
    if (!(error instanceof XpError) || error instanceof LockError) throw error;
    throw new ModelError(`${error.message}.`, {
      cause: error,
      hint: error.hint ?? 'Check the URL, or download the .h5 file and give its path.',
    });
  }
}
