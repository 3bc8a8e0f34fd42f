// `xp server`: the shared MLflow for sweeps across machines (tracking/shared-server.ts).
import { XpError } from '../errors.ts';

export async function serverCommand(opts: {
  backend?: string;
  artifacts?: string;
  createDb: boolean;
  host: string;
  port: number;
}): Promise<number> {
  if (!opts.backend)
    throw new XpError('xp server needs --backend, the database MLflow stores runs in', {
      hint: 'xp server --backend postgresql://mlflow@127.0.0.1:5432/mlflow --artifacts /srv/mlflow-artifacts',
    });
  if (!opts.artifacts) throw new XpError("xp server needs --artifacts, the folder where it stores the runs' files");
  const { serveShared } = await import('../tracking/shared-server.ts');
  return serveShared({
    backend: opts.backend,
    createDb: opts.createDb,
    artifacts: opts.artifacts,
    host: opts.host,
    port: opts.port,
    log: (line) => console.log(line),
  });
}
