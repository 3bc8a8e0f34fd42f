// How URLs with credentials are shown (util/url.ts) and how their passwords are kept for requests
// (util/credentials.ts): masked in every scheme, whatever the password holds; given back only to that server.
import { describe, expect, it } from 'vitest';
import { authorizationFor, keepCredentials, requestUrl, withCredentials } from '../../src/util/credentials.ts';
import { redactText, redactUrl, serverOf, userinfoOf, withoutUserinfo } from '../../src/util/url.ts';

describe('redactUrl', () => {
  it('masks the password in any scheme, an @ in it included, and leaves the rest as written', () => {
    expect(redactUrl('http://me:pw@127.0.0.1:5000/x?y=1')).toBe('http://me:***@127.0.0.1:5000/x?y=1');
    expect(redactUrl('redis://:pw@queue:6379/2')).toBe('redis://:***@queue:6379/2');
    expect(redactUrl('postgresql+psycopg2://mlflow:p@ss:w@db/mlflow')).toBe(
      'postgresql+psycopg2://mlflow:***@db/mlflow',
    );
    expect(redactUrl('https://me:p%40ss@host/a@b')).toBe('https://me:***@host/a@b');
    // A lone user is a token (https://TOKEN@host), masked whole; in a database URL it is a role name.
    expect(redactUrl('https://TOKEN@host/x')).toBe('https://***@host/x');
    expect(redactUrl('redis://TOKEN@queue:6379')).toBe('redis://***@queue:6379');
    expect(redactUrl('postgresql://mlflow@db:5432/mlflow')).toBe('postgresql://mlflow@db:5432/mlflow');
    expect(redactUrl('postgresql+psycopg2://mlflow@db/mlflow')).toBe('postgresql+psycopg2://mlflow@db/mlflow');
    expect(redactUrl('https://host/x@y:z')).toBe('https://host/x@y:z');
    expect(redactUrl('/data/train')).toBe('/data/train');
  });
  it('masks every URL in a text, as in an error message or a --set flag', () => {
    expect(redactText('--set tracking.uri=http://u:a@h and https://v:b@k/x.')).toBe(
      '--set tracking.uri=http://u:***@h and https://v:***@k/x.',
    );
  });
  it('reads user info percent-decoded, and no password from a masked URL', () => {
    expect(userinfoOf('https://me:p%40ss@host/x')).toEqual({ username: 'me', password: 'p@ss' });
    expect(userinfoOf('https://me:***@host/x')).toEqual({ username: 'me' });
    expect(userinfoOf('https://host/x')).toBeUndefined();
    expect(withoutUserinfo('https://me:pw@Host:8443/x')).toBe('https://Host:8443/x');
    expect(serverOf('https://me:pw@Host:8443/x')).toBe('https://host:8443');
  });
});

describe('keepCredentials', () => {
  it('hands back the URL masked and keeps the password for requests to that server only', () => {
    const shown = keepCredentials('https://alice:s3cret@files.example:8443/exp.yaml');
    expect(shown).toBe('https://alice:***@files.example:8443/exp.yaml');
    const basic = `Basic ${Buffer.from('alice:s3cret').toString('base64')}`;
    // The masked URL, a URL relative to it, and one of the same server without user info get it.
    expect(authorizationFor(shown)).toBe(basic);
    expect(authorizationFor(new URL('base.yaml', shown).href)).toBe(basic);
    expect(authorizationFor('https://files.example:8443/d.zip')).toBe(basic);
    // Another port, host or scheme, or another user, does not.
    expect(authorizationFor('https://files.example/exp.yaml')).toBeUndefined();
    expect(authorizationFor('http://files.example:8443/exp.yaml')).toBeUndefined();
    expect(authorizationFor('https://bob:***@files.example:8443/exp.yaml')).toBeUndefined();
    expect(requestUrl(shown)).toBe('https://files.example:8443/exp.yaml');
    expect(withCredentials(shown)).toBe('https://alice:s3cret@files.example:8443/exp.yaml');
    // xp's child processes inherit them through the environment, not argv.
    expect(process.env.XP_CREDENTIALS).toContain('s3cret');
  });
  it('keeps a token given as the lone user for its server, sent as Basic TOKEN: (as requests and curl send it)', () => {
    const shown = keepCredentials('https://T0KEN@tokens.example:9000/exp.yaml');
    expect(shown).toBe('https://***@tokens.example:9000/exp.yaml');
    const basic = `Basic ${Buffer.from('T0KEN:').toString('base64')}`;
    expect(authorizationFor(shown)).toBe(basic);
    expect(authorizationFor('https://tokens.example:9000/d.zip')).toBe(basic);
    expect(authorizationFor('https://T0KEN@other.example/x')).toBe(basic);
    expect(authorizationFor('https://other.example/x')).toBeUndefined();
    expect(withCredentials(shown)).toBe('https://T0KEN@tokens.example:9000/exp.yaml');
    expect(requestUrl(shown)).toBe('https://tokens.example:9000/exp.yaml');
  });
});
