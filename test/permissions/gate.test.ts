// The sandbox of files from the web, as pure decisions: Deno's flags, the accesses an experiment needs, and the
// gate that allows, asks or refuses them. (test/cli/remote-permissions.test.ts runs it through `xp run`.)
import { describe, expect, it } from 'vitest';
import type { Experiment } from '../../src/config/types.ts';
import { accessesOf, type AccessContext } from '../../src/permissions/access.ts';
import { checkAccesses, describeAccesses } from '../../src/permissions/check.ts';
import { granted, NO_GRANTS, parseGrants } from '../../src/permissions/grants.ts';
import { XpError } from '../../src/errors.ts';

const ctx: AccessContext = {
  cacheDir: '/home/u/.cache/xp',
  dataDir: '/home/u/.cache/xp/datasets',
  runsDir: '/work/runs',
  locked: true,
};

const experiment = (over: { data?: object; backbone?: object; tracking?: object }): Experiment =>
  ({
    data: { train: 'pets/train', validation: 'pets/validation', ...over.data },
    backbone: { name: 'mobilenet_v2', weights: 'nsfwjs', cut_layer: 'block_2_add', ...over.backbone },
    tracking: { enabled: true, ...over.tracking },
  }) as unknown as Experiment;

describe('Deno permission flags', () => {
  it('reads --allow-x alone as everything, =list as those paths (and below) or hosts (any port unless one is given)', () => {
    const g = parseGrants(
      { read: ['data,/srv/weights'], net: ['Example.com', 'mlflow.lan:5000'], write: [null] },
      false,
      '/home/u',
    );
    expect(g.read).toEqual(['/home/u/data', '/srv/weights']);
    expect(g.write).toBe('all');
    expect(granted(g, 'read', '/home/u/data/train/cats')).toBe(true);
    expect(granted(g, 'read', '/home/u/database')).toBe(false);
    expect(granted(g, 'net', 'example.com:8443')).toBe(true);
    expect(granted(g, 'net', 'mlflow.lan:5000')).toBe(true);
    expect(granted(g, 'net', 'mlflow.lan:5001')).toBe(false);
    expect(granted(parseGrants({}, true), 'net', 'anything:1')).toBe(true);
    expect(granted(NO_GRANTS, 'read', '/')).toBe(false);
  });
});

describe('what an experiment needs', () => {
  it('a data set by url reads only under the data directory and fetches from a pinned host', () => {
    const a = accessesOf([experiment({ data: { url: 'https://data.example/pets.zip' } })], ctx);
    expect(a.map((x) => [x.kind, x.target, x.field, Boolean(x.allowed)])).toEqual([
      ['net', 'data.example', 'data.url', true],
      ['read', '/home/u/.cache/xp/datasets/pets/train', 'data.train', true],
      ['read', '/home/u/.cache/xp/datasets/pets/validation', 'data.validation', true],
      ['write', '/work/runs', 'run folders', true],
    ]);
    // Without xp.lock the download is not pinned: it needs a grant like any other contact.
    expect(
      accessesOf([experiment({ data: { url: 'https://data.example/pets.zip' } })], { ...ctx, locked: false })[0]
        .allowed,
    ).toBeUndefined();
  });

  it('folders and weights outside the cache, a tracking server, and a path climbing out of the data directory need grants', () => {
    const a = accessesOf(
      [
        experiment({
          data: { train: '/home/u/photos/train', validation: '/home/u/photos/val' },
          backbone: { weights: '/home/u/secret.h5' },
          tracking: { uri: 'http://mlflow.other:5000' },
        }),
        experiment({
          data: { url: 'https://data.example/pets.zip', train: '../../../.ssh', validation: 'pets/validation' },
        }),
      ],
      ctx,
    );
    expect(a.filter((x) => !x.allowed).map((x) => `${x.kind} ${x.target} ${x.field}`)).toEqual([
      'read /home/u/photos/train data.train',
      'read /home/u/photos/val data.validation',
      'read /home/u/secret.h5 backbone.weights',
      'net mlflow.other:5000 tracking.uri',
      'read /home/u/.ssh data.train',
    ]);
  });
});

describe('the gate', () => {
  const needs = accessesOf(
    [
      experiment({
        data: { train: '/home/u/photos/train', validation: '/home/u/photos/val' },
        tracking: { uri: 'http://mlflow.other:5000' },
      }),
    ],
    ctx,
  );
  const origin = 'https://example.com/exp.yaml';

  it('refuses without a terminal, naming each access and the flags that allow them (exit code 2)', async () => {
    const error = await checkAccesses(needs, NO_GRANTS, origin).catch((e: XpError) => e);
    expect(error).toBeInstanceOf(XpError);
    expect((error as XpError).exitCode).toBe(2);
    expect((error as XpError).message).toBe(
      'https://example.com/exp.yaml needs permissions it was not granted: read /home/u/photos/train (data.train); read /home/u/photos/val (data.validation); contact mlflow.other:5000 (tracking.uri)',
    );
    expect((error as XpError).hint).toContain(
      '--allow-read=/home/u/photos/train --allow-read=/home/u/photos/val --allow-net=mlflow.other:5000',
    );
  });

  it('allows what the flags grant, and asks in a terminal once per access: y allows one, A all the rest, N refuses', async () => {
    const grants = parseGrants({ read: ['/home/u/photos'], net: ['mlflow.other'] });
    expect((await checkAccesses(needs, grants, origin)).every((d) => d.by)).toBe(true);

    const asked: string[] = [];
    const answers = ['y', 'A'];
    const decisions = await checkAccesses(needs, NO_GRANTS, origin, async (q) => {
      asked.push(q);
      return answers.shift();
    });
    expect(asked).toEqual([
      'https://example.com/exp.yaml wants to read /home/u/photos/train (data.train). Allow? [y/N/A] ',
      'https://example.com/exp.yaml wants to read /home/u/photos/val (data.validation). Allow? [y/N/A] ',
    ]);
    expect(decisions.map((d) => d.by)).toEqual(['answered y', 'answered A', 'answered A', 'the runs folder']);
    await expect(checkAccesses(needs, NO_GRANTS, origin, async () => 'N')).rejects.toThrow(/not granted/);
    expect(describeAccesses(decisions)[0]).toBe('  read  /home/u/photos/train  (data.train; allowed: answered y)');
  });
});
