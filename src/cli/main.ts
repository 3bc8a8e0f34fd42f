// The `xp` command line: commands declared as data (their flags in flags.ts); heavy modules (tfjs-node, MLflow) are
// imported only by the command that needs them, so --help and `xp check` stay quick. One handler sets the exit code.
import { parseArgs } from 'node:util';
import { XpError } from '../errors.ts';
import { keepCredentials } from '../util/credentials.ts';
import { redactText } from '../util/url.ts';
import { ConfigProblems, formatProblem } from '../config/problems.ts';
import {
  ALONE,
  json,
  lockFlags,
  lockOptions,
  nonNegativeInt,
  overrideFlags,
  parseOptions,
  permissionFlags,
  positiveInt,
  queueFlag,
  refuseEmptyValues,
  quiet,
  reload,
  sandboxOptions,
  type Flag,
  type Values,
} from './flags.ts';

interface Command {
  summary: string;
  usage: string;
  flags: Record<string, Flag>;
  run(args: string[], values: Values): Promise<number>;
}

const commands: Record<string, Command> = {
  check: {
    summary: 'validate experiment files: every config error `xp run` can find before training',
    usage: 'xp check <experiment.yaml|URL...> [--set key=value] [--sweep key=a,b]',
    flags: { ...overrideFlags, ...lockFlags, ...permissionFlags, quiet, reload },
    async run(args, v) {
      if (!args.length)
        throw new XpError('xp check needs at least one experiment file', { hint: 'xp check experiments/*.yaml' });
      const { check } = await import('./check.ts');
      return check(args, {
        set: v.set as string[],
        sweep: v.sweep as string[],
        maxTrials: positiveInt('--max-trials', v['max-trials'] as string),
        quiet: Boolean(v.quiet),
        reload: Boolean(v.reload),
        lock: lockOptions(v),
        sandbox: sandboxOptions(v),
      });
    },
  },
  config: {
    summary: 'print the resolved experiment as YAML: extends merged, flags applied, defaults filled in',
    usage: 'xp config <experiment.yaml|URL> [--origins] [--set key=value] [--sweep key=a,b]',
    flags: {
      ...overrideFlags,
      origins: {
        type: 'boolean',
        help: 'say where each value came from: file:line (and the files extending it), the flag, or default',
      },
      reload,
      ...lockFlags,
    },
    async run(args, v) {
      if (args.length !== 1)
        throw new XpError('xp config needs exactly one experiment file', {
          hint: 'xp config experiments/quickstart.yaml --origins',
        });
      const { configCommand } = await import('./config.ts');
      return configCommand(args[0], {
        set: v.set as string[],
        sweep: v.sweep as string[],
        maxTrials: positiveInt('--max-trials', v['max-trials'] as string),
        reload: Boolean(v.reload),
        origins: Boolean(v.origins),
        lock: lockOptions(v),
      });
    },
  },
  fmt: {
    summary: 'format experiment files: keys in schema order, comments kept (like deno fmt)',
    usage: 'xp fmt [files or folders...] [--check]',
    flags: {
      check: { type: 'boolean', help: 'change nothing; list the files that are not formatted and exit 1 if any' },
    },
    async run(args, v) {
      const { fmtCommand } = await import('./fmt.ts');
      return fmtCommand(args, { check: Boolean(v.check) });
    },
  },
  run: {
    summary: 'train an experiment (every trial of a sweep) and track it in MLflow',
    usage: 'xp run <experiment.yaml|URL> [options]',
    flags: {
      ...overrideFlags,
      ...lockFlags,
      ...permissionFlags,
      reload,
      'no-track': { type: 'boolean', help: 'do not log to MLflow' },
      'dry-run': { type: 'boolean', help: 'list the trials that would run, and stop' },
      parallel: { type: 'string', arg: 'N', default: '1', help: 'run N sweep trials at once in child processes' },
      rerun: { type: 'boolean', help: 'run sweep trials again even when MLflow has them FINISHED' },
      resume: {
        type: 'boolean',
        help: 'continue the latest KILLED or FAILED run of this config (each trial of a sweep) from its backup, in its folder and MLflow run; start fresh when there is none',
      },
      'no-backup': { type: 'boolean', help: 'do not back up the state at each epoch end (the run cannot be resumed)' },
      'no-share': {
        type: 'boolean',
        help: 'train each trial on its own, even when trials could share one backbone pass',
      },
      'data-dir': {
        type: 'string',
        arg: 'DIR',
        help: 'where datasets given by url are looked up and downloaded (default XP_DATA_DIR or ~/.cache/xp/datasets)',
      },
      quiet: { ...quiet, help: 'no progress bars: one line per epoch' },
      json: json('print one JSON object per epoch and a JSON summary, for scripts'),
      verbose: {
        type: 'boolean',
        help: 'also say which speed-ups training uses (XP_ACCEL) and why any is unavailable',
      },
      'keep-ui': {
        type: 'boolean',
        help: 'leave the embedded MLflow server up after the run, so the printed links keep working (xp ui --stop ends it)',
      },
      queue: {
        ...queueFlag,
        help: 'put the trials on this job queue for `xp worker`s instead of training here, redis://host:6379[/db] (default XP_QUEUE_URL)',
      },
      wait: { type: 'boolean', help: 'with --queue: follow the jobs to the summary (default in a terminal)' },
      'no-wait': { type: 'boolean', help: 'with --queue: print the sweep id and return once the jobs are queued' },
      split: {
        type: 'boolean',
        help: 'with --queue: one job per trial instead of one per shared backbone pass (more workers than groups)',
      },
      only: { type: 'string', internal: true, help: "--parallel's child processes: the trial indexes to run" },
      'parent-run-id': { type: 'string', internal: true, help: "--parallel's child processes: the sweep's parent run" },
    },
    async run(args, v) {
      if (args.length !== 1)
        throw new XpError('xp run needs exactly one experiment file', { hint: 'xp run experiments/quickstart.yaml' });
      const { runCommand } = await import('./run.ts');
      return runCommand(args[0], {
        set: v.set as string[],
        sweep: v.sweep as string[],
        maxTrials: positiveInt('--max-trials', v['max-trials'] as string),
        track: !v['no-track'],
        dryRun: Boolean(v['dry-run']),
        parallel: positiveInt('--parallel', v.parallel as string),
        rerun: Boolean(v.rerun),
        resume: Boolean(v.resume),
        backup: !v['no-backup'],
        share: !v['no-share'],
        dataDir: v['data-dir'] as string | undefined,
        sandbox: sandboxOptions(v),
        output: v.json ? 'json' : v.quiet ? 'quiet' : 'bar',
        only: v.only
          ? String(v.only)
              .split(',')
              .map((x) => positiveInt('--only', x))
          : undefined,
        parentRunId: (v['parent-run-id'] as string) || undefined,
        verbose: Boolean(v.verbose),
        keepUi: Boolean(v['keep-ui']),
        lock: lockOptions(v),
        reload: Boolean(v.reload),
        queue: v.queue as string | undefined,
        wait: v['no-wait'] ? false : v.wait ? true : Boolean(process.stdout.isTTY),
        split: Boolean(v.split),
      });
    },
  },
  worker: {
    summary: 'train the jobs of a queue (sweeps submitted with `xp run --queue`) until stopped',
    usage: 'xp worker --queue redis://host:6379[/db] [--concurrency N] [--name NAME]',
    flags: {
      queue: queueFlag,
      concurrency: {
        type: 'string',
        arg: 'N',
        default: '1',
        help: 'train N jobs at once, in child processes sharing the cores',
      },
      name: { type: 'string', arg: 'NAME', help: 'how the queue and MLflow name this worker (default <host>-<pid>)' },
      'train-job': {
        type: 'boolean',
        internal: true,
        help: "a worker's training process: trains the one job its worker sends",
      },
    },
    async run(args, v) {
      if (args.length)
        throw new XpError(`xp worker takes no arguments (got ${args.join(' ')})`, {
          hint: 'xp worker --queue redis://127.0.0.1:6379',
        });
      const { workerCommand } = await import('./worker.ts');
      return workerCommand({
        queue: v.queue as string | undefined,
        name: v.name as string | undefined,
        concurrency: positiveInt('--concurrency', v.concurrency as string),
        trainJob: Boolean(v['train-job']),
      });
    },
  },
  queue: {
    summary: 'what a queued sweep is doing (status), or cancel it, or retry its failed jobs',
    usage: 'xp queue [status|cancel|retry] [sweep] --queue redis://host:6379',
    flags: { queue: queueFlag, json: json('print the jobs as JSON') },
    async run(args, v) {
      const { queueCommand } = await import('./queue.ts');
      return queueCommand(args, { queue: v.queue as string | undefined, json: Boolean(v.json) });
    },
  },
  server: {
    summary: 'serve the one MLflow that workers on several machines log to (PostgreSQL store, proxied artifacts)',
    usage: 'xp server --backend postgresql://user@host:5432/db --artifacts DIR [--create-db] [--host ADDR] [--port N]',
    flags: {
      backend: {
        type: 'string',
        arg: 'URL',
        help: 'the database MLflow stores runs in, e.g. postgresql://mlflow@db:5432/mlflow',
      },
      artifacts: {
        type: 'string',
        arg: 'DIR',
        help: "where the server keeps the runs' files (workers upload through it)",
      },
      'create-db': { type: 'boolean', help: 'create the PostgreSQL database when it does not exist' },
      host: { type: 'string', arg: 'ADDR', default: '0.0.0.0', help: 'address to listen on' },
      port: { type: 'string', arg: 'N', default: '5000', help: 'port to listen on' },
    },
    async run(_args, v) {
      const { serverCommand } = await import('./server.ts');
      return serverCommand({
        backend: v.backend as string | undefined,
        artifacts: v.artifacts as string | undefined,
        createDb: Boolean(v['create-db']),
        host: v.host as string,
        port: positiveInt('--port', v.port as string),
      });
    },
  },
  predict: {
    summary: 'print the class and probability of each image with a trained run',
    usage: 'xp predict <run-dir> <images or folders...>',
    flags: { json: json('one JSON object per image') },
    async run(args, v) {
      if (args.length < 2)
        throw new XpError('xp predict needs a run directory and at least one image', {
          hint: 'xp predict runs/quickstart/<run-id> cat.jpg',
        });
      const { predictCommand } = await import('./predict.ts');
      return predictCommand(args[0], args.slice(1), { json: Boolean(v.json) });
    },
  },
  export: {
    summary: "write a run's model as one self-contained model for other tools (tfjs, Keras, SavedModel), checked",
    usage: 'xp export <run-dir|runs:/RUN_ID> [--format tfjs|keras|savedmodel] [--out PATH] [--images DIR]',
    flags: {
      format: {
        type: 'string',
        arg: 'FORMAT',
        help: 'tfjs (a LayersModel folder, the default), keras (a Keras 3 .keras file) or savedmodel (a TensorFlow SavedModel for TensorFlow Serving)',
      },
      out: {
        type: 'string',
        arg: 'PATH',
        help: 'the folder to write (default: <run-dir>/export/<format>); an earlier export there is replaced',
      },
      images: {
        type: 'string',
        arg: 'DIR',
        help: "a folder of class folders to check the export on (default: the run's validation folder)",
      },
      json: json('print the result as JSON'),
    },
    async run(args, v) {
      if (args.length !== 1)
        throw new XpError('xp export needs one run folder or runs:/<run id>', {
          hint: 'xp export runs/quickstart/<run-id> --format keras',
        });
      const { exportCommand } = await import('./export.ts');
      return exportCommand(args[0], {
        format: v.format as string | undefined,
        out: v.out as string | undefined,
        images: v.images as string | undefined,
        json: Boolean(v.json),
      });
    },
  },
  register: {
    summary:
      "log a run's model to MLflow (python_function flavor) and register a version; champion moves on a better metric",
    usage: 'xp register <run-dir|runs:/RUN_ID> <name> [--metric val_accuracy] [--images DIR]',
    flags: {
      metric: {
        type: 'string',
        arg: 'METRIC',
        help: "the result the champion alias is chosen by (default val_accuracy: the run's final_val_accuracy)",
      },
      images: {
        type: 'string',
        arg: 'DIR',
        help: "a folder of class folders to check the model on (default: the run's validation folder)",
      },
      json: json('print the result as JSON'),
    },
    async run(args, v) {
      if (args.length !== 2)
        throw new XpError('xp register needs a run folder (or runs:/<run id>) and a model name', {
          hint: 'xp register runs/quickstart/<run-id> cats-vs-dogs',
        });
      const { registerCommand } = await import('./export.ts');
      return registerCommand(args[0], args[1], {
        metric: v.metric as string | undefined,
        images: v.images as string | undefined,
        json: Boolean(v.json),
      });
    },
  },
  serve: {
    summary: "serve a run's model over HTTP with MLflow's scoring protocol (batched, with Prometheus metrics)",
    usage:
      'xp serve <run-dir|models:/NAME/VERSION|models:/NAME@ALIAS> [--port 8080] [--host 127.0.0.1] [--max-batch N] [--batch-wait-ms M]',
    flags: {
      port: { type: 'string', arg: 'N', default: '8080', help: 'port to listen on (0: a free one, printed)' },
      host: {
        type: 'string',
        arg: 'ADDR',
        default: '127.0.0.1',
        help: 'address to listen on (0.0.0.0 for every interface: anyone who reaches it can use the model)',
      },
      'max-batch': {
        type: 'string',
        arg: 'N',
        default: '32',
        help: "the most images predicted in one model call, concurrent requests' together",
      },
      'batch-wait-ms': {
        type: 'string',
        arg: 'M',
        default: '5',
        help: 'how long an image waits for others to fill its batch (0: never waits)',
      },
      'max-body-mb': { type: 'string', arg: 'B', default: '16', help: 'larger request bodies get 413' },
      'max-images': { type: 'string', arg: 'K', default: '64', help: 'more images in one request get 400' },
      'read-timeout-ms': {
        type: 'string',
        arg: 'T',
        default: '30000',
        help: 'a client that has not sent its whole request by then gets 408 and is disconnected',
      },
    },
    async run(args, v) {
      if (args.length !== 1)
        throw new XpError('xp serve needs one run folder, or models:/NAME/VERSION or models:/NAME@ALIAS', {
          hint: 'xp serve runs/quickstart/<run-id> --port 8080',
        });
      const { serveCommand } = await import('./serve.ts');
      return serveCommand(args[0], {
        host: v.host as string,
        port: nonNegativeInt('--port', v.port as string),
        maxBatch: positiveInt('--max-batch', v['max-batch'] as string),
        batchWaitMs: nonNegativeInt('--batch-wait-ms', v['batch-wait-ms'] as string),
        maxBodyMb: positiveInt('--max-body-mb', v['max-body-mb'] as string),
        maxImages: positiveInt('--max-images', v['max-images'] as string),
        readTimeoutMs: positiveInt('--read-timeout-ms', v['read-timeout-ms'] as string),
      });
    },
  },
  evaluate: {
    summary: 'accuracy and confusion matrix of a trained run on a labelled directory',
    usage: 'xp evaluate <run-dir> <dir>',
    flags: { json: json('print the result as JSON') },
    async run(args, v) {
      if (args.length !== 2) throw new XpError('xp evaluate needs a run directory and a directory of class folders');
      const { evaluateCommand } = await import('./predict.ts');
      return evaluateCommand(args[0], args[1], { json: Boolean(v.json) });
    },
  },
  runs: {
    summary: 'compare the runs of an experiment: differing params, final metrics, folders',
    usage: 'xp runs [experiment-name] [--best] [--json] [--wide]',
    flags: {
      best: { type: 'boolean', help: "print the best run's id and directory" },
      json: json('print the rows as JSON'),
      all: { type: 'boolean', help: 'include sweep parents' },
      wide: { type: 'boolean', help: "whole run ids and names, and each run's link when an MLflow server runs" },
    },
    async run(args, v) {
      const { runsCommand } = await import('./runs.ts');
      return runsCommand(args[0], {
        best: Boolean(v.best),
        json: Boolean(v.json),
        all: Boolean(v.all),
        wide: Boolean(v.wide),
      });
    },
  },
  ui: {
    summary: 'start (or reuse) the MLflow UI on the local store and print the links of a run, sweep or experiment',
    usage:
      'xp ui [run-dir | experiment.yaml | experiment-name | sweep-id] [--port N] | xp ui --stop | xp ui --study <experiment.yaml | study folder | study.journal>',
    flags: {
      port: { type: 'string', arg: 'N', help: 'port to listen on (default: the one it had last, else a free one)' },
      stop: { type: 'boolean', help: 'end the server `xp run --keep-ui` left up' },
      study: {
        type: 'string',
        arg: 'FILE',
        help: "open a search's study in optuna-dashboard instead (its experiment file, runs/<experiment>/search-<hash>, or the study.journal), on 127.0.0.1",
      },
    },
    async run(args, v) {
      if (v.study !== undefined) {
        if (args.length)
          throw new XpError('xp ui --study takes the study as its value, nothing else', {
            hint: 'xp ui --study experiments/search.yaml',
          });
        const { dashboardCommand } = await import('../search/dashboard.ts');
        return dashboardCommand(v.study as string, v.port ? positiveInt('--port', v.port as string) : undefined);
      }
      if (args.length > 1)
        throw new XpError('xp ui takes one run folder, experiment file, experiment name or sweep id', {
          hint: 'xp ui runs/<experiment>/<run-id>',
        });
      const { uiCommand } = await import('./runs.ts');
      return uiCommand({
        port: v.port ? positiveInt('--port', v.port as string) : undefined,
        target: args[0],
        stop: Boolean(v.stop),
      });
    },
  },
  sync: {
    summary: 'send tracking records that could not reach MLflow during a run',
    usage: 'xp sync [run-dir...] [--to URI]',
    flags: {
      to: { type: 'string', arg: 'URI', help: 'send to this MLflow server instead of the one each run was logging to' },
    },
    async run(args, v) {
      const { syncCommand } = await import('./runs.ts');
      return syncCommand(args, { to: v.to as string | undefined });
    },
  },
  bench: {
    // How long each mode takes on the 2-core machine of docs/performance.md, which says where each figure comes from.
    summary:
      'measure images/s of each stage, whole epochs and the example sweep, next to Keras on this machine (about 20 min)',
    usage: 'xp bench [--quick] [--full] [--no-keras] [--no-sweep | --only-sweep] [--set key=value]',
    flags: {
      quick: {
        type: 'boolean',
        help: '1 epoch of 20 steps instead of 2 of 100, sweep epochs of 10 steps instead of 30 (a few minutes)',
      },
      full: {
        type: 'boolean',
        help: 'the whole reference run: 20 epochs of 100 steps, xp and Keras (about an hour on 2 cores)',
      },
      'no-keras': { type: 'boolean', help: 'skip the Keras baseline (about 7 min instead of 20)' },
      'no-sweep': {
        type: 'boolean',
        help: 'skip the example sweep, the xp run of the sweep against six separate xp runs and six Keras runs (about 10 min; 3 without Keras)',
      },
      'only-sweep': {
        type: 'boolean',
        help: 'time the example sweep and nothing else (about 11 min; 4 without Keras)',
      },
      set: {
        type: 'string',
        multiple: true,
        arg: 'key=value',
        help: "change the sweep's base configuration, e.g. --set head.pooling=avg (Keras runs are skipped)",
      },
    },
    async run(_args, v) {
      const { runBench } = await import('./bench.ts');
      return runBench({
        quick: Boolean(v.quick),
        full: Boolean(v.full),
        keras: !v['no-keras'],
        sweep: !v['no-sweep'] || Boolean(v['only-sweep']),
        onlySweep: Boolean(v['only-sweep']),
        set: (v.set as string[] | undefined) ?? [],
      });
    },
  },
};

function usage(): string {
  const width = Math.max(...Object.keys(commands).map((c) => c.length));
  return [
    'xp: declarative transfer-learning experiments on native TensorFlow, tracked in MLflow',
    '',
    'Usage: xp <command> [options]',
    '',
    'Commands:',
    ...Object.entries(commands).map(([name, c]) => `  ${name.padEnd(width)}  ${c.summary}`),
    '',
    'Run `xp <command> --help` for the options of a command.',
  ].join('\n');
}

function commandHelp(c: Command): string {
  const shown = Object.entries({
    ...c.flags,
    help: { type: 'boolean', short: 'h', help: 'show this help' } as Flag,
  }).filter(([, f]) => !f.internal);
  const entries = shown.map(([name, f]) => {
    const label = `${f.short ? `-${f.short}, ` : ''}--${name}${f.arg ? (f.optionalValue ? `[=${f.arg}]` : ` ${f.arg}`) : ''}`;
    return [label, f.default !== undefined && f.default !== false ? `${f.help} (default ${f.default})` : f.help];
  });
  const width = Math.max(...entries.map(([k]) => k.length));
  return [`${c.usage}`, '', c.summary, '', 'Options:', ...entries.map(([k, d]) => `  ${k.padEnd(width)}  ${d}`)].join(
    '\n',
  );
}

export async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (!name || name === '--help' || name === '-h' || name === 'help') {
    console.log(usage());
    return name ? 0 : 2;
  }
  if (name === '--version' || name === '-v') {
    const { createRequire } = await import('node:module');
    console.log(createRequire(import.meta.url)('../../package.json').version);
    return 0;
  }
  const command = commands[name];
  if (!command) {
    const { didYouMean } = await import('../config/problems.ts');
    console.error(`xp: unknown command "${name}"${didYouMean(name, Object.keys(commands))}\n\n${usage()}`);
    return 2;
  }
  try {
    // `--allow-read` alone grants everything: given the value ALONE, since parseArgs has no optional values.
    const alone = new Set(
      Object.entries(command.flags)
        .filter(([, f]) => f.optionalValue)
        .map(([n]) => `--${n}`),
    );
    // A password written in a URL argument (a file, --set tracking.uri=..., --queue, --to) stays in this process:
    // what the command sees, prints and stores is the URL with it masked (util/credentials.ts).
    const args = rest.map((arg) => keepCredentials(arg));
    const { values, positionals } = parseArgs({
      args: args.map((arg) => (alone.has(arg) ? `${arg}=${ALONE}` : arg)),
      options: parseOptions({ ...command.flags, help: { type: 'boolean', short: 'h', help: '' } }),
      allowPositionals: true,
      strict: true,
    });
    if (values.help) {
      console.log(commandHelp(command));
      return 0;
    }
    refuseEmptyValues(command.flags, values as Values);
    return await command.run(positionals, values as Values);
  } catch (error) {
    return report(error, name, command);
  }
}

function report(error: unknown, name: string, command: Command): number {
  if (error instanceof ConfigProblems) {
    for (const p of error.problems) console.error(formatProblem(p));
    return 2;
  }
  if (error instanceof XpError) {
    // A message may quote what a server or library said about a URL: passwords in it are masked here too.
    console.error(`xp ${name}: ${redactText(error.message)}`);
    if (error.hint) console.error(`  ${error.hint}`);
    if (process.env.XP_DEBUG && error.cause) console.error(error.cause);
    return error.exitCode;
  }
  const code = (error as { code?: string })?.code;
  if (typeof code === 'string' && code.startsWith('ERR_PARSE_ARGS')) {
    console.error(`xp ${name}: ${redactText((error as Error).message)}\n\n${commandHelp(command)}`);
    return 2;
  }
  // A bug, not bad input: keep the stack for the report.
  console.error(`xp ${name}: unexpected error: ${redactText(String((error as Error)?.stack ?? error))}`);
  return 1;
}
