// Lint gate (part of `npm run lint`, run by deploy/scripts/test.sh before the tests; issue #11).
// ESLint's recommended rules and typescript-eslint's recommended type-checked ones (not strict), with type
// information from tsconfig.lint.json (tsconfig.json plus the tests it excludes).
import js from '@eslint/js';
import { defineConfig } from 'eslint/config';
import tseslint from 'typescript-eslint';

export default defineConfig(
  {
    ignores: [
      'dist/**',
      'node_modules/**',
      '**/build/**',
      'bench-results/**',
      '.state/**',
      'e2e/spiffe-peer/**',
      // proto-loader-gen-types output: regenerated from the .proto files, never edited by hand.
      '**/generated/**',
    ],
  },
  js.configs.recommended,
  tseslint.configs.recommendedTypeChecked,
  {
    languageOptions: {
      parserOptions: {
        project: './tsconfig.lint.json',
        tsconfigRootDir: import.meta.dirname,
      },
    },
    linterOptions: {
      reportUnusedDisableDirectives: 'error',
    },
    rules: {
      // Issue #11: a promise nobody awaits loses its rejection (an unhandled rejection kills the process).
      '@typescript-eslint/no-floating-promises': 'error',
      // Issue #11: an empty block, empty catch included, must say why it is empty (a comment inside is enough).
      'no-empty': ['error', { allowEmptyCatch: false }],
      // The codebase's conventions for "unused on purpose": `_arg` in a fake's signature, and dropping a field
      // by rest destructuring (`const { at: _at, ...content } = view`).
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', ignoreRestSiblings: true }],
      // Off by choice: here an `async` function without `await` is the deliberate way to make a synchronous
      // throw a rejection where an interface returns a Promise (attest, reconcile, fastify handlers);
      // dropping `async` to satisfy the rule would change how their errors travel.
      '@typescript-eslint/require-await': 'off',
    },
  },
  {
    // The browser UI (ui/) is typed against the DOM by its own tsconfig.
    files: ['ui/**/*.ts'],
    languageOptions: { parserOptions: { project: './ui/tsconfig.json', tsconfigRootDir: import.meta.dirname } },
  },
  {
    // Vitest's asymmetric matchers (expect.stringContaining, expect.any, ...) are typed `any` by design, so
    // every `{ field: expect.stringContaining(...) }` would be an "unsafe assignment". Tests only.
    files: ['**/*.test.ts'],
    rules: { '@typescript-eslint/no-unsafe-assignment': 'off' },
  },
  {
    // Plain JS config files: no type information.
    files: ['**/*.js', '**/*.cjs', '**/*.mjs'],
    extends: [tseslint.configs.disableTypeChecked],
  },
  {
    files: ['**/*.cjs'],
    languageOptions: { sourceType: 'commonjs', globals: { module: 'writable', require: 'readonly' } },
  },
);
