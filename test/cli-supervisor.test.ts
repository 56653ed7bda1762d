// `pomona up`'s supervisor: each component's stdout and stderr go straight into its log file, never
// through the supervising process, and a component started again appends to the same file.
import { mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { type RunningComponent, Supervisor } from "../cli/supervisor.ts";

describe("the supervisor's logs", () => {
  it("gives each component its log file as stdout and stderr, appending across starts", async () => {
    const dir = mkdtempSync(join(tmpdir(), "pomona-supervisor-"));
    let exited: (c: RunningComponent) => void = () => {};
    const supervisor = new Supervisor(dir, (c) => exited(c));
    const run = async (line: string) => {
      const done = new Promise<RunningComponent>((resolve) => {
        exited = resolve;
      });
      const started = supervisor.start({
        name: "lines",
        main: "test/support/log-lines-component.ts",
        env: { LINE: line },
      });
      // No pipe: this process reads none of the component's output.
      expect(started.child.stdout).toBeNull();
      expect(started.child.stderr).toBeNull();
      expect(await done).toBe(started);
      return started.logFile;
    };
    const file = await run("first");
    expect(file).toBe(join(dir, "lines.log"));
    expect(await run("second")).toBe(file);
    const text = readFileSync(file, "utf8");
    for (const line of ["stdout first", "stderr first", "stdout second", "stderr second"]) expect(text).toContain(line);
    expect(text.indexOf("first")).toBeLessThan(text.indexOf("second"));
  });
});
