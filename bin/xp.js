#!/usr/bin/env node
// Runs the TypeScript sources directly (no build step) through tsx's loader.
import { register } from 'tsx/esm/api';

// TensorFlow's C++ start-up chatter (oneDNN, CPU features) is noise to users; errors still show.
process.env.TF_CPP_MIN_LOG_LEVEL ??= '2';

register();
const { main } = await import('../src/cli/main.ts');
process.exitCode = await main(process.argv.slice(2));
