import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    testTimeout: 120_000,
    hookTimeout: 120_000,
    // Separate child processes: a crash inside the native addon kills one
    // worker and fails its file instead of taking the whole run down.
    pool: "forks",
  },
});
