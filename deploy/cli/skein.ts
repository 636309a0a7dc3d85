#!/usr/bin/env node
// The skein CLI. Every failure prints one clear line (what, and what to do) and exits non-zero.
import { Command } from 'commander';
import { registerLocal } from './local.js';
import { registerConnect } from './connect.js';
import { registerCa } from './ca.js';
import { registerStatus } from './status.js';
import { registerDrill } from './drill.js';
import { registerDashboard } from './dashboard.js';
import { registerVersion } from './version.js';
import { SKEIN_VERSION } from '../version.js';

const program = new Command('skein').description('Skein: multi-cluster service mesh control for Kubernetes').version(SKEIN_VERSION);
program.showHelpAfterError();
registerLocal(program);
registerStatus(program);
registerConnect(program);
registerCa(program);
registerDrill(program);
registerDashboard(program);
registerVersion(program);

program.parseAsync(process.argv).catch((err: Error) => {
  console.error(`skein: ${err.message}`);
  if (process.env.SKEIN_DEBUG) console.error(err.stack);
  process.exit(1);
});
