/**
 * Runs Pomona's components as child processes of `pomona up`, each with its
 * own log file, and stops them all, in reverse order, on the way out. A child
 * writes its stdout and stderr straight into its log file (the file is its
 * stdout), so no log line passes through this process: relaying them cost
 * this process a few wake-ups per request on the machine that serves it
 * (docs/decisions.md, "npm start's log lines go straight to their files"). Once
 * `restartOnExit` is set, a component that exits is started again with backoff,
 * as a Deployment's pod would be (the operator exits on purpose when it loses
 * its leader Lease, e.g. after a long API server outage).
 */
import { type ChildProcess, spawn } from "node:child_process";
import { closeSync, mkdirSync, openSync } from "node:fs";
import { join } from "node:path";
import { nodeFlagsFor } from "../crds/api/well-known.ts";

export interface ComponentSpec {
  name: string;
  /** Path of the component's main.ts, relative to the repository. */
  main: string;
  env: Record<string, string>;
}

export interface RunningComponent {
  name: string;
  logFile: string;
  child: ChildProcess;
}

const repoRoot = join(import.meta.dirname, "..");

export class Supervisor {
  private readonly running: RunningComponent[] = [];
  private readonly logDir: string;
  private stopping = false;
  restartOnExit = false;
  private readonly onUnexpectedExit: (c: RunningComponent, code: number | null) => void;

  constructor(logDir: string, onUnexpectedExit: (c: RunningComponent, code: number | null) => void) {
    mkdirSync(logDir, { recursive: true });
    this.logDir = logDir;
    this.onUnexpectedExit = onUnexpectedExit;
  }

  start(spec: ComponentSpec, backoffMs = 1_000): RunningComponent {
    const logFile = join(this.logDir, `${spec.name}.log`);
    const startedAt = Date.now();
    // Opened for appending: the child's lines land at the end whoever else wrote the file (a restart's).
    const log = openSync(logFile, "a");
    let child: ChildProcess;
    try {
      // process.execPath is the Node 24 that runs this CLI, so every component runs on the same runtime.
      child = spawn(process.execPath, [...nodeFlagsFor(spec.main), join(repoRoot, spec.main)], {
        cwd: repoRoot,
        env: { ...process.env, ...spec.env },
        stdio: ["ignore", log, log],
      });
    } finally {
      // The child holds its own copy of the descriptor.
      closeSync(log);
    }
    const component = { name: spec.name, logFile, child };
    child.once("exit", (code) => {
      if (this.stopping) return;
      this.onUnexpectedExit(component, code);
      if (!this.restartOnExit) return;
      // A component that ran for a minute starts over at the shortest wait.
      const wait = Date.now() - startedAt > 60_000 ? 1_000 : backoffMs;
      setTimeout(() => {
        if (this.stopping) return;
        this.running.splice(this.running.indexOf(component), 1);
        this.start(spec, Math.min(wait * 2, 30_000));
      }, wait);
    });
    this.running.push(component);
    return component;
  }

  /** SIGTERM each component, newest first, and wait for it; SIGKILL after the grace period. */
  async stopAll(graceMs = 15_000): Promise<void> {
    this.stopping = true;
    for (const { child } of [...this.running].reverse()) {
      if (child.exitCode !== null || child.signalCode !== null) continue;
      const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
      child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), graceMs);
      await exited;
      clearTimeout(timer);
    }
  }
}
