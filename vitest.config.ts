import { defineConfig } from 'vitest/config';

// Integration tests boot guests on real KVM (and some run firmware that KVM
// interprets on hosts without VT-x/AMD-V): give them room on a loaded host.
// BHYVE_TEST_NO_SKIP=1 makes every skipped test a failure
// (test/support/no-skip-reporter.ts; .ci/run sets it).
export default defineConfig({
  test: {
    testTimeout: 60_000,
    hookTimeout: 120_000,
    reporters: ['default', './test/support/no-skip-reporter.ts'],
  },
});
