import { defineConfig } from 'vitest/config';
import base from './vitest.config.ts';

// `npm run test:quick`: the inner loop. The tests that train no model, start no MLflow server and need neither Redis
// nor PostgreSQL; `npm test` (what CI runs) is still the whole suite. A new test file joins this tier by being listed.
export default defineConfig({
  ...base,
  test: {
    ...base.test,
    include: [
      'test/config/**/*.test.ts',
      'test/permissions/**/*.test.ts',
      'test/data/**/*.test.ts',
      'test/util/**/*.test.ts',
      'test/bench/**/*.test.ts',
      'test/setup/libtensorflow.test.ts',
      'test/lock/lock.test.ts',
      'test/lock/downloads.test.ts',
      'test/accel/{policy,init,native-ops,rmsprop,xla-update,fold}.test.ts',
      'test/model/{backbone,tfjs-model,keras-weights,save,weight-shapes,loss,schedule}.test.ts',
      'test/hostile/{config,weights,accel,lock}.test.ts',
      'test/search/optuna.test.ts',
      'test/tracking/units.test.ts',
      'test/train/{scores,sharing,run-folder,metrics}.test.ts',
      'test/cli/{fmt,preflight}.test.ts',
      'test/serve/{protocol,batcher}.test.ts',
    ],
  },
});
