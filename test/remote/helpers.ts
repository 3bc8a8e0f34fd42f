// A local HTTP server on 127.0.0.1 stands in for the web: files put at routes, the requests it got counted;
// /redirect.yaml redirects to a plain-http URL of another host.
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface FileServer {
  url: string;
  /** Serves `body` at `route` (e.g. `/exp.yaml`), replacing what was there; returns its URL. */
  put(route: string, body: string | Buffer): string;
  /** How many times `route` was requested. */
  hits(route: string): number;
  close(): Promise<void>;
}

export async function startFileServer(): Promise<FileServer> {
  const files = new Map<string, Buffer>();
  const hits = new Map<string, number>();
  const server: Server = createServer((req, res) => {
    const route = req.url ?? '';
    hits.set(route, (hits.get(route) ?? 0) + 1);
    const body = files.get(route);
    if (route === '/redirect.yaml') res.writeHead(302, { location: 'http://example.com/exp.yaml' }).end();
    else if (body) res.writeHead(200, { 'content-length': body.length }).end(body);
    else res.writeHead(404).end();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return {
    url,
    put(route, body) {
      files.set(route, Buffer.isBuffer(body) ? body : Buffer.from(body));
      return `${url}${route}`;
    },
    hits: (route) => hits.get(route) ?? 0,
    async close() {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}
