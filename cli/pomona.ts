#!/usr/bin/env node
/** The `pomona` command line: up, status, keys, logs. */
import { parseArgs } from "node:util";
import { keys } from "./keys.ts";
import { logs } from "./logs.ts";
import { status } from "./status.ts";
import { up } from "./up.ts";

const usage = `Usage: pomona <command> [options]

Commands:
  up                      run Pomona on this machine and print an endpoint and a key (npm start)
  status                  models, replicas, nodes and gateway breakers
  keys create <name>      mint an API key (--owner, --models a,b, --policy); refuses an existing name
  keys rotate <name>      mint a new key for an existing name; the old one stops working with the next config
  keys list               API keys with prefix, owner and state
  keys revoke <name>      delete an API key; the gateway refuses it within a second
  logs [component]        print the logs of operator, node-agent or gateway (-f to follow)

Options:
  --kubeconfig <path>     use this cluster (else KUBECONFIG, else a local control plane)
  --state-dir <path>      where the local control plane, logs and model cache live (default .pomona)
  -n, --namespace <ns>    namespace of models and keys (default default)
  --model <source>        up: the quickstart model (hf:owner/repo:quant, https://… or a file)
  --gateway-port <port>   up: gateway port (default 8080)
`;

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    kubeconfig: { type: "string" },
    "state-dir": { type: "string", default: process.env.POMONA_STATE_DIR ?? ".pomona" },
    namespace: { type: "string", short: "n", default: "default" },
    "system-namespace": { type: "string", default: "pomona-system" },
    model: { type: "string" },
    "gateway-port": { type: "string", default: "8080" },
    "agent-port": { type: "string", default: "8090" },
    "operator-port": { type: "string", default: "8081" },
    owner: { type: "string" },
    models: { type: "string" },
    policy: { type: "string" },
    follow: { type: "boolean", short: "f", default: false },
    help: { type: "boolean", short: "h", default: false },
  },
});

const port = (name: string, value: string) => {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1 || n > 65535) throw new Error(`--${name} must be a port number, got ${value}`);
  return n;
};

const common = { kubeconfig: values.kubeconfig, stateDir: values["state-dir"], namespace: values.namespace };
const [command, ...rest] = positionals;

try {
  if (values.help || command === undefined || command === "help") {
    process.stdout.write(usage);
  } else if (command === "up") {
    await up({
      ...common,
      model: values.model,
      systemNamespace: values["system-namespace"],
      gatewayPort: port("gateway-port", values["gateway-port"]),
      agentPort: port("agent-port", values["agent-port"]),
      operatorPort: port("operator-port", values["operator-port"]),
    });
  } else if (command === "status") {
    await status(common);
  } else if (command === "keys") {
    await keys(common, rest, { owner: values.owner, models: values.models, policy: values.policy });
  } else if (command === "logs") {
    await logs(common.stateDir, rest[0], values.follow);
  } else {
    throw new Error(`unknown command ${command}\n\n${usage}`);
  }
} catch (error) {
  process.stderr.write(`pomona: ${(error as Error).message}\n`);
  process.exit(1);
}
