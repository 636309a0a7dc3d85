import { defineConfig } from 'vitest/config';

// Unit tests are fast and need nothing but Node; e2e tests start real clusters and run one file at a time
// (they share the machine's cgroups, netns and ports, and CI has 2 cores).
export default defineConfig({
  test: {
    projects: [
      {
        test: {
          name: 'unit',
          include: ['{mesh,apiserver,sync,mtls,datapath,deploy,testbed}/**/*.test.ts'],
          testTimeout: 20_000,
        },
      },
      {
        test: {
          name: 'e2e',
          include: ['e2e/tests/**/*.test.ts'],
          setupFiles: ['e2e/tests/setup.ts'],
          testTimeout: 600_000,
          hookTimeout: 900_000,
          fileParallelism: false,
          maxWorkers: 1,
        },
      },
    ],
  },
});
