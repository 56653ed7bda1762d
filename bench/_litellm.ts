/**
 * LiteLLM's proxy, the best-known open-source OpenAI gateway, for the side-by-side comparison in
 * bench/gateway-overhead.ts. Installed from PyPI into a venv cached under ~/.cache/pomona/ (built once,
 * reused by later runs), then started against an OpenAI-shaped upstream with a generated config.
 *
 * Pinned version: 1.100.5, the newest release whose dependencies resolved from the package registry this
 * project builds against when the benchmark was written (later ones require a certifi not yet published
 * there). POMONA_LITELLM_VERSION overrides it.
 *
 * Settings, chosen to let LiteLLM run as fast as it can while doing the same job as the gateway:
 * - no database (no DATABASE_URL): keys are not looked up, spend is not written; a master key is still
 *   checked on every request, as the gateway checks its key;
 * - no callbacks (success, failure, logging), message logging off, telemetry off, the local model cost
 *   map (LITELLM_LOCAL_MODEL_COST_MAP=True: no network at start), its own log level ERROR;
 * - uvicorn with uvloop (LiteLLM's default server), one worker: the gateway is one Node process with one
 *   event loop, so both get one process, and LiteLLM's docs recommend one worker per pod, scaled out with
 *   pods; the benchmark also reports requests per CPU-second of each, which does not depend on how many
 *   workers share the machine's cores;
 * - num_retries 0 and request_timeout 30, as in LiteLLM's own proxy benchmark config;
 * - uvicorn's access log off, although the gateway keeps its own: that favours LiteLLM, not Pomona.
 */
import { type ChildProcess, execFile, spawn } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { homedir, tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { freePort } from "../controlplane/local-control-plane.ts";

export const LITELLM_VERSION = process.env.POMONA_LITELLM_VERSION ?? "1.100.5";
const venv = join(homedir(), ".cache", "pomona", `litellm-${LITELLM_VERSION}`);
const installedMarker = join(venv, ".installed");

function run(command: string, args: string[], timeoutMs: number): Promise<void> {
  return new Promise((resolve, reject) => {
    execFile(command, args, { timeout: timeoutMs, maxBuffer: 64 << 20 }, (error, _stdout, stderr) => {
      if (!error) return resolve();
      const last = stderr.trim().split("\n").slice(-3).join(" | ");
      reject(new Error(`${command} ${args.slice(0, 3).join(" ")} failed: ${last || error.message}`));
    });
  });
}

/** The litellm executable, installing it first when the cached venv is absent or was left half-built. */
export async function ensureLiteLLM(): Promise<string> {
  const bin = join(venv, "bin", "litellm");
  if (existsSync(installedMarker) && existsSync(bin)) return bin;
  rmSync(venv, { recursive: true, force: true });
  mkdirSync(join(venv, ".."), { recursive: true });
  console.error(`installing litellm[proxy]==${LITELLM_VERSION} into ${venv} (once; a minute or two)`);
  await run("python3", ["-m", "venv", venv], 120_000);
  await run(
    join(venv, "bin", "pip"),
    ["install", "--disable-pip-version-check", "--no-input", "-q", `litellm[proxy]==${LITELLM_VERSION}`],
    900_000,
  );
  writeFileSync(installedMarker, `litellm[proxy]==${LITELLM_VERSION}\n`);
  return bin;
}

export interface LiteLLMProxy {
  port: number;
  pid: number | undefined;
  stop: () => Promise<void>;
}

// uvicorn's logging with its access log silenced; errors still reach stderr.
const logConfig = {
  version: 1,
  disable_existing_loggers: false,
  formatters: { plain: { format: "%(levelname)s %(name)s %(message)s" } },
  handlers: { stderr: { class: "logging.StreamHandler", formatter: "plain", stream: "ext://sys.stderr" } },
  loggers: {
    uvicorn: { handlers: ["stderr"], level: "WARNING" },
    "uvicorn.error": { level: "WARNING" },
    "uvicorn.access": { handlers: [], level: "WARNING", propagate: false },
  },
};

/** Starts the proxy serving `model` from an OpenAI-compatible `apiBase`; resolves once it answers. */
export async function startLiteLLM(options: {
  model: string;
  apiBase: string;
  upstreamKey: string;
  masterKey: string;
}): Promise<LiteLLMProxy> {
  const bin = await ensureLiteLLM();
  const dir = mkdtempSync(join(tmpdir(), "pomona-litellm-"));
  // JSON is YAML, so the config needs no YAML writer.
  const config = {
    model_list: [
      {
        model_name: options.model,
        litellm_params: { model: `openai/${options.model}`, api_base: options.apiBase, api_key: options.upstreamKey },
      },
    ],
    litellm_settings: {
      drop_params: true,
      callbacks: [],
      success_callback: [],
      failure_callback: [],
      turn_off_message_logging: true,
      telemetry: false,
      // As in LiteLLM's own proxy benchmark config.
      num_retries: 0,
      request_timeout: 30,
    },
    general_settings: { master_key: options.masterKey, disable_spend_logs: true, disable_error_logs: true },
  };
  writeFileSync(join(dir, "config.yaml"), JSON.stringify(config, null, 2));
  writeFileSync(join(dir, "log-config.json"), JSON.stringify(logConfig));
  const port = await freePort();
  const { DATABASE_URL: _ignored, ...env } = process.env;
  const child: ChildProcess = spawn(
    bin,
    [
      ...["--config", join(dir, "config.yaml"), "--host", "127.0.0.1", "--port", String(port)],
      ...["--num_workers", "1", "--telemetry", "False", "--log_config", join(dir, "log-config.json")],
    ],
    {
      cwd: dir,
      env: { ...env, LITELLM_LOCAL_MODEL_COST_MAP: "True", LITELLM_LOG: "ERROR", PYTHONUNBUFFERED: "1" },
      stdio: ["ignore", "ignore", "pipe"],
    },
  );
  let stderr = "";
  child.stderr?.on("data", (c: Buffer) => {
    stderr = (stderr + c).slice(-4_000);
  });
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
      child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), 10_000);
      await exited;
      clearTimeout(timer);
    }
    rmSync(dir, { recursive: true, force: true });
  };
  // Importing LiteLLM takes tens of seconds on a slow machine.
  const deadline = Date.now() + 180_000;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) {
      await stop();
      throw new Error(
        `litellm exited with ${child.exitCode} at start: ${stderr.trim().split("\n").slice(-3).join(" | ")}`,
      );
    }
    const alive = await fetch(`http://127.0.0.1:${port}/health/liveliness`).then(
      (r) => r.ok,
      () => false,
    );
    if (alive) return { port, pid: child.pid, stop };
    await sleep(250);
  }
  await stop();
  throw new Error("litellm did not answer /health/liveliness within 180 s");
}
