// Who xp is to MLflow, as MLflow 3.17's Python client decides it (rest_utils.py, credentials.py, requests): the
// tracking URI's user info first, then MLFLOW_TRACKING_USERNAME/PASSWORD (or ~/.mlflow/credentials) as Basic,
// then MLFLOW_TRACKING_TOKEN as Bearer.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, expect, it } from 'vitest';
import { identityFromEnv, mlflowAuthorization } from '../../src/tracking/auth.ts';

const home = fs.mkdtempSync(path.join(os.tmpdir(), 'xp-auth-'));
afterAll(() => fs.rmSync(home, { recursive: true, force: true }));
const basic = (user: string, password: string) => `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`;

it('takes user info of the URL over the variables, Basic over the token, and the token alone as Bearer', () => {
  const env = { MLFLOW_TRACKING_USERNAME: 'u', MLFLOW_TRACKING_PASSWORD: 'p', MLFLOW_TRACKING_TOKEN: 't' };
  const identity = identityFromEnv(env, home);
  expect(mlflowAuthorization('http://me:pw@mlflow.auth-a:5000', identity)).toBe(basic('me', 'pw'));
  expect(mlflowAuthorization('http://mlflow.auth-a:5001', identity)).toBe(basic('u', 'p'));
  expect(mlflowAuthorization('http://mlflow.auth-a:5001', identityFromEnv({ MLFLOW_TRACKING_TOKEN: 't' }, home))).toBe(
    'Bearer t',
  );
  // A user without a password (or an empty one) is no Basic, as in MLflow.
  expect(
    mlflowAuthorization(
      'http://mlflow.auth-a:5001',
      identityFromEnv({ MLFLOW_TRACKING_USERNAME: 'u', MLFLOW_TRACKING_PASSWORD: '' }, home),
    ),
  ).toBeUndefined();
});

it('completes a masked URL with the password MLFLOW_TRACKING_URI gives for that server (a journal, a queued job)', () => {
  const identity = identityFromEnv({ MLFLOW_TRACKING_URI: 'http://me:pw2@mlflow.auth-b:5000' }, home);
  expect(mlflowAuthorization('http://me:***@mlflow.auth-b:5000', identity)).toBe(basic('me', 'pw2'));
  expect(mlflowAuthorization('http://me:***@mlflow.auth-c:5000', identity)).toBeUndefined();
});

it('reads ~/.mlflow/credentials when the variables are not set, as configparser does', () => {
  fs.mkdirSync(path.join(home, '.mlflow'));
  fs.writeFileSync(
    path.join(home, '.mlflow', 'credentials'),
    '[other]\nmlflow_tracking_username = no\n[mlflow]\n# who\nMLFLOW_TRACKING_USERNAME = fu\nmlflow_tracking_password: fp\n',
  );
  expect(identityFromEnv({}, home)).toEqual({ username: 'fu', password: 'fp', token: undefined });
  expect(identityFromEnv({ MLFLOW_TRACKING_USERNAME: 'eu' }, home)).toMatchObject({ username: 'eu', password: 'fp' });
});
