import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    testTimeout: 120_000,
    hookTimeout: 120_000,
    // Separate child processes: a crash inside the native addon kills one
    // worker and fails its file instead of taking the whole run down.
    pool: "forks",
    // One file at a time: the event-loop test measures stalls of the JS thread, and on a 2-core
    // machine a concurrent file (the GPU suite on lavapipe keeps every core busy for ~20 s) can
    // starve that thread for 60 ms without our code blocking it (seen once in CI).
    fileParallelism: false,
  },
});
