// A request's body, read whole up to a limit: the limit is what keeps a large or endless body from taking the
// server's memory, so a body is refused (413) as soon as it says or shows that it passes it.
import type { IncomingMessage } from 'node:http';
import { BadRequest } from './protocol.ts';

export function readBody(req: IncomingMessage, maxBytes: number): Promise<Buffer> {
  const tooLarge = () =>
    new BadRequest(413, `the body passes ${(maxBytes / 2 ** 20).toFixed(0)} MB (--max-body-mb); send fewer images`);
  const declared = Number(req.headers['content-length']);
  if (declared > maxBytes) return Promise.reject(tooLarge());
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const onData = (chunk: Buffer) => {
      size += chunk.length;
      if (size > maxBytes) {
        req.off('data', onData);
        chunks.length = 0;
        reject(tooLarge());
      } else chunks.push(chunk);
    };
    req.on('data', onData);
    req.on('end', () => resolve(Buffer.concat(chunks, size)));
    // A client that goes away or is cut off (the server's request timeout) ends its request here.
    req.on('error', reject);
    req.on('close', () => {
      if (!req.complete) reject(new BadRequest(408, 'the body did not arrive whole'));
    });
  });
}
