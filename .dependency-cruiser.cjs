// Import rules between the repository's parts (issue #11). Each part's README states its rule in its
// "May import" line; this file is the machine check of exactly those lines (`npm run lint`, run by
// deploy/scripts/test.sh). Data flows one way: mtls <- mesh <- {apiserver, sync, datapath, deploy, testbed} <- e2e;
// ui/ (the browser UI) takes types from mesh/ and is imported by nothing.
/** @type {import('dependency-cruiser').IConfiguration} */
module.exports = {
  forbidden: [
    {
      name: 'mtls-imports-nothing',
      comment: 'mtls/ imports nothing else in this repository (mtls/README.md: "May import").',
      severity: 'error',
      from: { path: '^mtls/' },
      to: { path: '^(mesh|apiserver|sync|datapath|deploy|testbed|e2e)/' },
    },
    {
      name: 'mesh-imports-mtls-only',
      comment: 'mesh/ is the shared layer every process uses; it imports mtls/ only (mesh/README.md: "May import").',
      severity: 'error',
      from: { path: '^mesh/' },
      to: { path: '^(apiserver|sync|datapath|deploy|testbed|e2e)/' },
    },
    {
      name: 'apiserver-imports-mesh-mtls',
      comment:
        'apiserver/ imports mesh/ and mtls/ only; apiserver/main.ts alone also composes sync/ into the same process (apiserver/README.md: "May import").',
      severity: 'error',
      from: { path: '^apiserver/' },
      to: { path: '^(datapath|deploy|testbed|e2e)/' },
    },
    {
      name: 'apiserver-sync-only-from-main',
      comment:
        'Only apiserver/main.ts may import sync/ (it composes the sync engine into the apiserver process); the rest of apiserver/ uses mesh/ (apiserver/README.md: "May import").',
      severity: 'error',
      from: { path: '^apiserver/', pathNot: '^apiserver/main\\.ts$' },
      to: { path: '^sync/' },
    },
    {
      name: 'sync-imports-mesh-mtls',
      comment: 'sync/ imports mesh/ and mtls/ only (sync/README.md: "May import").',
      severity: 'error',
      from: { path: '^sync/' },
      to: { path: '^(apiserver|datapath|deploy|testbed|e2e)/' },
    },
    {
      name: 'datapath-imports-mesh-mtls',
      comment: 'datapath/ imports mesh/ and mtls/ only (datapath/README.md: "May import").',
      severity: 'error',
      from: { path: '^datapath/' },
      to: { path: '^(apiserver|sync|deploy|testbed|e2e)/' },
    },
    {
      name: 'deploy-imports-mesh-mtls',
      comment: 'deploy/ imports mesh/, mtls/ and its own subfolders only (deploy/README.md: "May import").',
      severity: 'error',
      from: { path: '^deploy/' },
      to: { path: '^(apiserver|sync|datapath|e2e)/' },
    },
    {
      name: 'deploy-testbed-only-from-local',
      comment:
        'Only deploy/cli/local.ts (`skein local`) may reach testbed/ (deploy/README.md: "May import"); the rest of the CLI must not load the test bed.',
      severity: 'error',
      from: { path: '^deploy/', pathNot: '^deploy/cli/local\\.ts$' },
      to: { path: '^testbed/' },
    },
    {
      name: 'deploy-local-testbed-lazy',
      comment:
        'deploy/cli/local.ts reaches testbed/ only through dynamic import() (lazy), except the light testbed/state.ts (deploy/README.md: "May import").',
      severity: 'error',
      from: { path: '^deploy/cli/local\\.ts$' },
      to: { path: '^testbed/', pathNot: '^testbed/state\\.ts$', dynamic: false },
    },
    {
      name: 'testbed-imports-mesh-mtls-images',
      comment: 'testbed/ imports mesh/, mtls/ and deploy/images/ only (testbed/README.md: "May import").',
      severity: 'error',
      from: { path: '^testbed/' },
      to: { path: '^(apiserver|sync|datapath|e2e)/|^deploy/(?!images/)' },
    },
    {
      name: 'ui-imports-mesh-types-only',
      comment:
        'ui/ is the browser UI, bundled by esbuild: it imports npm packages, and from mesh/ the dashboard and drill types only (type-only imports: no Node code reaches the bundle) (ui/README.md: "May import").',
      severity: 'error',
      from: { path: '^ui/' },
      to: { path: '^(mtls|apiserver|sync|datapath|deploy|testbed|e2e)/' },
    },
    {
      name: 'ui-mesh-type-only',
      comment: 'ui/ takes only types from mesh/ (ui/README.md: "May import").',
      severity: 'error',
      from: { path: '^ui/' },
      to: { path: '^mesh/', dependencyTypesNot: ['type-only'] },
    },
    {
      name: 'no-imports-ui',
      comment: 'Nothing imports ui/: the apiserver serves and the drill CLI inlines its built bundle (dist/ui) by path (ui/README.md).',
      severity: 'error',
      from: { pathNot: '^ui/' },
      to: { path: '^ui/' },
    },
    {
      name: 'no-product-imports-e2e',
      comment: 'e2e/ holds tests and benchmarks only; no product file imports it (e2e/README.md).',
      severity: 'error',
      from: { pathNot: '^e2e/' },
      to: { path: '^e2e/' },
    },
    {
      name: 'no-circular',
      comment:
        'No circular dependencies anywhere (README.md "Layout": data flows one way). Exempt: proto-loader-gen-types output under generated/, where google.protobuf.Value and Struct/ListValue are mutually recursive type-only declarations.',
      severity: 'error',
      from: { pathNot: '/generated/' },
      to: { circular: true },
    },
    {
      name: 'not-to-unresolvable',
      comment: 'Every import resolves to a file or an installed package.',
      severity: 'error',
      from: {},
      to: { couldNotResolve: true },
    },
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    exclude: { path: '^(dist|node_modules|bench-results|\\.state)/|/build/|^e2e/spiffe-peer/' },
    // Type-only imports couple parts as much as value imports do.
    tsPreCompilationDeps: true,
    // NodeNext resolution from the tsconfig: imports are written `./x.js` for `x.ts`.
    tsConfig: { fileName: 'tsconfig.lint.json' },
    enhancedResolveOptions: {
      exportsFields: ['exports'],
      conditionNames: ['import', 'require', 'node', 'default', 'types'],
      mainFields: ['module', 'main', 'types', 'typings'],
    },
    reporterOptions: { text: { highlightFocused: true } },
  },
};
