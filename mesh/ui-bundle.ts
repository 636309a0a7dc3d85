// Where the browser UI built from ui/ by esbuild lives (dist/ui): next to the compiled code, or the
// repository's dist/ when running from source (tests). skein-apiserver inlines it into the dashboard's
// page; `skein drill --html` into a standalone report.
import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

export type UiBundle = 'dashboard' | 'drill-report';

function uiDir(): string | undefined {
  return [new URL('../ui/', import.meta.url), new URL('../dist/ui/', import.meta.url)].map((u) => fileURLToPath(u)).find((d) => existsSync(`${d}dashboard.js`));
}

/** A bundle's JavaScript or CSS; throws saying how to build it when it is missing. */
function readUiBundle(name: UiBundle, kind: 'js' | 'css'): string {
  const dir = uiDir();
  if (!dir) throw new Error('the browser UI is not built (dist/ui is missing): run npm run build');
  return readFileSync(`${dir}${name}.${kind}`, 'utf8');
}

/** A bundle's JavaScript and CSS made safe to inline in <script> and <style>: neither can close its element. */
export function inlineUiBundle(name: UiBundle): { js: string; css: string } {
  return { js: readUiBundle(name, 'js').replace(/<\/script/gi, '<\\/script'), css: readUiBundle(name, 'css').replace(/<\/style/gi, '<\\/style') };
}

/** A value as JSON safe inside <script type="application/json">: nothing in it can close the element or open a comment. */
export const jsonForScript = (value: unknown) => JSON.stringify(value).replace(/</g, '\\u003c').replace(/\u2028/g, '\\u2028').replace(/\u2029/g, '\\u2029');
