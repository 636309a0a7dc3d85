// `skein version`: this CLI's version and the image tags it deploys (the Helm chart's defaults, the drill's client).
import type { Command } from 'commander';
import { IMAGES, SKEIN_VERSION } from '../version.js';

function versionText(): string {
  const width = Math.max(...Object.values(IMAGES).map((i) => i.ref.length));
  return [`skein ${SKEIN_VERSION}`, 'images:', ...Object.values(IMAGES).map((i) => `  ${i.ref.padEnd(width)}  ${i.runs}`)].join('\n');
}

export function registerVersion(program: Command): void {
  program
    .command('version')
    .description('print the version and the images it deploys')
    .option('--json', 'machine-readable output')
    .action((o: { json?: boolean }) => {
      console.log(o.json ? JSON.stringify({ version: SKEIN_VERSION, images: Object.fromEntries(Object.entries(IMAGES).map(([k, v]) => [k, v.ref])) }) : versionText());
    });
}
