import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    // One control plane for the whole run: started once, shared by every suite through its kubeconfig.
    globalSetup: ["test/setup/control-plane.ts"],
    // Suites run one after another: llama.cpp inference and the control plane share two cores, and
    // oversubscribed llama.cpp threads slow generation by orders of magnitude.
    fileParallelism: false,
    testTimeout: 60_000,
    hookTimeout: 600_000,
    reporters: ["default"],
  },
});
