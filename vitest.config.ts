import { defineConfig } from 'vitest/config';

// Integration tests boot guests on real KVM (and some run firmware that KVM
// interprets on hosts without VT-x/AMD-V): give them room on a loaded host.
export default defineConfig({
  test: {
    testTimeout: 60_000,
    hookTimeout: 120_000,
  },
});
