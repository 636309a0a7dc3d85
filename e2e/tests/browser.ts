// Debian's headless Chromium driven by playwright-core (no browser download): the dashboard's browser
// test and benchmark. Screenshots go to e2e/artifacts/ (gitignored).
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { chromium, type Browser } from 'playwright-core';
import { REPO_ROOT } from '../../testbed/repo.js';

const CHROMIUM = process.env.SKEIN_CHROMIUM ?? '/usr/bin/chromium';

export function launchChromium(): Promise<Browser> {
  // As root Chromium refuses its sandbox; the pages it opens are our own dashboard and report.
  return chromium.launch({ executablePath: CHROMIUM, headless: true, args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'] });
}

export function artifactPath(name: string): string {
  const dir = join(REPO_ROOT, 'e2e', 'artifacts');
  mkdirSync(dir, { recursive: true });
  return join(dir, name);
}
