// Where the browser UI built from ui/ by esbuild lives (dist/ui): next to the compiled code, or the
// repository's dist/ when running from source (tests). skein-apiserver serves it; `skein drill --html`
// inlines it into a standalone report.
import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

export type UiBundle = 'dashboard' | 'drill-report';

function uiDir(): string | undefined {
  return [new URL('../ui/', import.meta.url), new URL('../dist/ui/', import.meta.url)].map((u) => fileURLToPath(u)).find((d) => existsSync(`${d}dashboard.js`));
}

/** A bundle's JavaScript or CSS; throws saying how to build it when it is missing. */
export function readUiBundle(name: UiBundle, kind: 'js' | 'css'): string {
  const dir = uiDir();
  if (!dir) throw new Error('the browser UI is not built (dist/ui is missing): run npm run build');
  return readFileSync(`${dir}${name}.${kind}`, 'utf8');
}
