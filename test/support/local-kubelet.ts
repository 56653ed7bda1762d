/**
 * A stand-in for the kubelet the test API server lacks: it starts the containers of Pomona's
 * Deployments and DaemonSet as local processes with exactly the configuration the objects on the
 * server declare — command, args, environment, mounted Secrets, service account — so a typo in a
 * variable's name or a missing Secret in a manifest fails the way it would in a cluster.
 *
 * The whole mapping from a Pod to a local process, and nothing else:
 * - image: its WORKDIR /app is this checkout and `node` is the Node running the tests;
 * - network: each containerPort gets a free local port, and an environment value equal to a container
 *   port's number is replaced by that local port (a Pod has its own network; here they share one);
 * - fieldRef: metadata.namespace → the object's namespace, metadata.name → `<workload>-local`,
 *   spec.nodeName → the stand-in Node, status.podIP and status.hostIP → 127.0.0.1;
 * - secretKeyRef / configMapKeyRef: the value read from the API server;
 * - volumes: a Secret or ConfigMap becomes a temporary folder with one file per key, read from the API
 *   server (a missing one fails, as the kubelet never starts such a Pod); emptyDir and hostPath become an
 *   empty temporary folder; an environment value under a mountPath is moved to that folder;
 * - service account: KUBECONFIG names the same API server with a token of the Pod's service account
 *   from the TokenRequest API, bound to the stand-in Node, as a Pod's token names its node;
 * - the Node: registered Ready with the address 127.0.0.1, its Lease renewed; readiness probes are sent
 *   as a kubelet sends them (HTTPS without checking the certificate when the probe says HTTPS);
 * - the environment holds PATH and what the container declares, nothing of the test's own.
 * Anything else a manifest might use (envFrom, other volume or field kinds) throws, so it is noticed.
 */

import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { get as httpGet, type IncomingMessage } from "node:http";
import { get as httpsGet } from "node:https";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { CoordinationV1Api, CoreV1Api, type V1Lease } from "@kubernetes/client-node";
import { inject } from "vitest";
import { parse, stringify } from "yaml";
import { freePort } from "../../controlplane/local-control-plane.ts";
import { nodeFlagsFor } from "../../crds/api/well-known.ts";
import { kubeConfig } from "./kube.ts";
import { kubectlOk } from "./kubectl.ts";
import { startNode, type TestProcess } from "./processes.ts";

/** The image's working directory (Dockerfile WORKDIR): its files are this checkout's. */
const imageWorkdir = "/app";

interface EnvVar {
  name: string;
  value?: string;
  valueFrom?: {
    fieldRef?: { fieldPath: string };
    secretKeyRef?: { name: string; key: string; optional?: boolean };
    configMapKeyRef?: { name: string; key: string; optional?: boolean };
  };
}

interface Container {
  name: string;
  command?: string[];
  args?: string[];
  env?: EnvVar[];
  envFrom?: unknown[];
  ports?: { name?: string; containerPort: number }[];
  volumeMounts?: { name: string; mountPath: string }[];
  readinessProbe?: { httpGet?: { path: string; port: string | number; scheme?: "HTTP" | "HTTPS" } };
}

interface Volume {
  name: string;
  secret?: { secretName: string; optional?: boolean };
  configMap?: { name: string; optional?: boolean };
  emptyDir?: object;
  hostPath?: object;
}

export interface Workload {
  kind: string;
  metadata: { name: string; namespace: string };
  spec: {
    template: {
      spec: {
        serviceAccountName?: string;
        nodeSelector?: Record<string, string>;
        containers: Container[];
        volumes?: Volume[];
      };
    };
  };
}

export interface LocalPod {
  workload: string;
  process: TestProcess;
  /** Local port of each containerPort, by its name (or number). */
  ports: Map<string, number>;
}

export interface LocalKubelet {
  nodeName: string;
  /** Starts the workload's first container; resolves when its readiness probe answers 200. */
  run: (workload: Workload) => Promise<LocalPod>;
  /** The last lines each process printed, for a failure's message. */
  outputs: () => string;
  stop: () => Promise<void>;
}

const decode = (data: Record<string, string> | undefined, key: string) =>
  data?.[key] === undefined ? undefined : Buffer.from(data[key], "base64").toString("utf8");

async function readObject(kind: "secret" | "configmap", name: string, namespace: string, optional = false) {
  const result = await kubectlOk(["get", kind, name, "-n", namespace, "-o", "json", "--ignore-not-found"]);
  if (!result.trim()) {
    if (optional) return undefined;
    throw new Error(`${kind} ${namespace}/${name}, which the Pod needs, does not exist`);
  }
  const object = JSON.parse(result) as { data?: Record<string, string> };
  // ConfigMap data is plain text; give both kinds the same base64 shape.
  if (kind === "configmap") {
    object.data = Object.fromEntries(
      Object.entries(object.data ?? {}).map(([k, v]) => [k, Buffer.from(v).toString("base64")]),
    );
  }
  return object.data ?? {};
}

/** Registers the stand-in Node (Ready, its Lease renewed as a kubelet renews it) carrying `labels`. */
export async function startLocalKubelet(nodeName: string, labels: Record<string, string>): Promise<LocalKubelet> {
  const kc = kubeConfig();
  const core = kc.makeApiClient(CoreV1Api);
  const coordination = kc.makeApiClient(CoordinationV1Api);
  const root = mkdtempSync(join(tmpdir(), "pomona-local-kubelet-"));
  await core.createNode({
    body: { metadata: { name: nodeName, labels: { ...labels, "kubernetes.io/hostname": nodeName } } },
  });
  const readyCondition = () => ({
    type: "Ready",
    status: "True",
    reason: "KubeletReady",
    message: "stand-in for a kubelet (test/support/local-kubelet.ts)",
    lastHeartbeatTime: new Date(),
    lastTransitionTime: new Date(),
  });
  await kubectlOk([
    ...["patch", "node", nodeName, "--subresource=status", "--type=merge"],
    // A kubelet registers its node's addresses; the node-agent's certificate is signed only for them.
    ...[
      "-p",
      JSON.stringify({
        status: { conditions: [readyCondition()], addresses: [{ type: "InternalIP", address: "127.0.0.1" }] },
      }),
    ],
  ]);
  const lease = (): V1Lease => ({
    metadata: { name: nodeName, namespace: "kube-node-lease" },
    // MicroTime: the API server wants six fractional digits; the client passes a string through untouched.
    spec: {
      holderIdentity: nodeName,
      leaseDurationSeconds: 40,
      renewTime: new Date().toISOString().replace(/\.(\d{3})Z$/, ".$1000Z") as unknown as Date,
    },
  });
  await coordination.createNamespacedLease({ namespace: "kube-node-lease", body: lease() });
  const renew = setInterval(() => {
    coordination
      .replaceNamespacedLease({ name: nodeName, namespace: "kube-node-lease", body: lease() })
      .catch(() => {});
  }, 10_000);

  const pods: LocalPod[] = [];
  const server = (parse(readFileSync(inject("kubeconfig"), "utf8")) as { clusters: unknown[] }).clusters;

  async function kubeconfigFor(serviceAccount: string, namespace: string, dir: string): Promise<string> {
    const token = (
      await kubectlOk([
        ...["create", "token", serviceAccount, "-n", namespace, "--duration=2h"],
        ...["--bound-object-kind=Node", `--bound-object-name=${nodeName}`],
      ])
    ).trim();
    const path = join(dir, "kubeconfig");
    const cluster = (server as { name: string }[])[0]!;
    writeFileSync(
      path,
      stringify({
        apiVersion: "v1",
        kind: "Config",
        clusters: [cluster],
        users: [{ name: serviceAccount, user: { token } }],
        contexts: [{ name: "pod", context: { cluster: cluster.name, user: serviceAccount, namespace } }],
        "current-context": "pod",
      }),
      { mode: 0o600 },
    );
    return path;
  }

  async function run(workload: Workload): Promise<LocalPod> {
    const { namespace, name } = workload.metadata;
    const podSpec = workload.spec.template.spec;
    const container = podSpec.containers[0]!;
    if (container.envFrom?.length) throw new Error(`${name}: envFrom is not mapped by the local kubelet`);
    const dir = join(root, name);
    mkdirSync(dir, { recursive: true });

    const ports = new Map<string, number>();
    const byNumber = new Map<string, string>();
    for (const port of container.ports ?? []) {
      const local = String(await freePort());
      ports.set(port.name ?? String(port.containerPort), Number(local));
      ports.set(String(port.containerPort), Number(local));
      byNumber.set(String(port.containerPort), local);
    }

    // Volumes: each mountPath becomes a local folder.
    const mounts: [string, string][] = [];
    for (const mount of container.volumeMounts ?? []) {
      const volume = podSpec.volumes?.find((v) => v.name === mount.name);
      if (!volume) throw new Error(`${name}: volumeMount ${mount.name} names no volume`);
      const local = join(dir, "volumes", volume.name);
      mkdirSync(local, { recursive: true });
      const source = volume.secret
        ? await readObject("secret", volume.secret.secretName, namespace, volume.secret.optional)
        : volume.configMap
          ? await readObject("configmap", volume.configMap.name, namespace, volume.configMap.optional)
          : volume.emptyDir || volume.hostPath
            ? {}
            : undefined;
      if (!source) throw new Error(`${name}: volume ${volume.name} is of a kind the local kubelet does not map`);
      for (const key of Object.keys(source)) writeFileSync(join(local, key), decode(source, key)!, { mode: 0o600 });
      mounts.push([mount.mountPath, local]);
    }
    const localPath = (value: string) => {
      for (const [mountPath, local] of mounts) {
        if (value === mountPath || value.startsWith(`${mountPath}/`)) return local + value.slice(mountPath.length);
      }
      return value;
    };

    const fields: Record<string, string> = {
      "metadata.namespace": namespace,
      "metadata.name": `${name}-local`,
      "spec.nodeName": nodeName,
      "status.podIP": "127.0.0.1",
      "status.hostIP": "127.0.0.1",
    };
    const env: Record<string, string | undefined> = {};
    for (const variable of container.env ?? []) {
      const from = variable.valueFrom;
      let value: string | undefined;
      if (!from) value = variable.value ?? "";
      else if (from.fieldRef) {
        value = fields[from.fieldRef.fieldPath];
        if (value === undefined) throw new Error(`${name}: fieldRef ${from.fieldRef.fieldPath} is not mapped`);
      } else if (from.secretKeyRef || from.configMapKeyRef) {
        const ref = (from.secretKeyRef ?? from.configMapKeyRef)!;
        const data = await readObject(from.secretKeyRef ? "secret" : "configmap", ref.name, namespace, ref.optional);
        value = decode(data, ref.key);
        if (value === undefined && !ref.optional) throw new Error(`${name}: ${ref.name} has no key ${ref.key}`);
      } else throw new Error(`${name}: valueFrom of ${variable.name} is of a kind the local kubelet does not map`);
      if (value !== undefined) env[variable.name] = localPath(byNumber.get(value) ?? value);
    }

    const command = [...(container.command ?? []), ...(container.args ?? [])];
    const scriptAt = command.findIndex((part, i) => i > 0 && !part.startsWith("-"));
    if (command[0] !== "node" || scriptAt < 0)
      throw new Error(`${name}: expected \`node [flags] <script>\`, got ${command.join(" ")}`);
    const given = command[scriptAt] ?? "";
    const script = given.startsWith(`${imageWorkdir}/`) ? given.slice(imageWorkdir.length + 1) : given;
    // startNode runs each component with the Node flags Pomona gives it; a manifest must declare the same.
    const flags = command.slice(1, scriptAt).join(" ");
    if (flags !== nodeFlagsFor(script).join(" "))
      throw new Error(`${name}: Node flags '${flags}', expected '${nodeFlagsFor(script).join(" ")}' for ${script}`);
    if (!podSpec.serviceAccountName) throw new Error(`${name}: no serviceAccountName`);
    const kubeconfig = await kubeconfigFor(podSpec.serviceAccountName, namespace, dir);

    // startNode merges process.env; every variable of the test's environment but PATH is removed first.
    const clean = Object.fromEntries(Object.keys(process.env).map((k) => [k, undefined]));
    const process_ = startNode(script, command.slice(scriptAt + 1), {
      ...clean,
      PATH: process.env.PATH,
      KUBECONFIG: kubeconfig,
      ...env,
    });
    const pod: LocalPod = { workload: name, process: process_, ports };
    pods.push(pod);

    const probe = container.readinessProbe?.httpGet;
    if (!probe) throw new Error(`${name}: no readinessProbe to wait for`);
    const probePort = ports.get(String(probe.port));
    if (!probePort) throw new Error(`${name}: readinessProbe port ${probe.port} is no containerPort`);
    const deadline = Date.now() + 120_000;
    for (;;) {
      if (process_.child.exitCode !== null) {
        throw new Error(`${name} exited (${process_.child.exitCode}) before ready:\n${process_.output().slice(-3000)}`);
      }
      if ((await probeStatus(probe.scheme ?? "HTTP", probePort, probe.path)) === 200) return pod;
      if (Date.now() > deadline) {
        throw new Error(
          `${name}'s readinessProbe ${probe.path} did not answer 200:\n${process_.output().slice(-3000)}`,
        );
      }
      await sleep(250);
    }
  }

  return {
    nodeName,
    run,
    outputs: () => pods.map((pod) => `--- ${pod.workload}:\n${pod.process.output().slice(-2000)}`).join("\n"),
    async stop() {
      clearInterval(renew);
      await Promise.all(pods.map((pod) => pod.process.stop()));
      await core.deleteNode({ name: nodeName }).catch(() => {});
      await coordination.deleteNamespacedLease({ name: nodeName, namespace: "kube-node-lease" }).catch(() => {});
      rmSync(root, { recursive: true, force: true });
    },
  };
}

/** One probe as a kubelet sends it: over HTTPS without checking the certificate, as kubelets do. */
function probeStatus(scheme: "HTTP" | "HTTPS", port: number, path: string): Promise<number | undefined> {
  return new Promise((resolve) => {
    const onResponse = (res: IncomingMessage) => {
      res.resume();
      resolve(res.statusCode);
    };
    const url = `${scheme.toLowerCase()}://127.0.0.1:${port}${path}`;
    const req =
      scheme === "HTTPS" ? httpsGet(url, { rejectUnauthorized: false }, onResponse) : httpGet(url, onResponse);
    req.on("error", () => resolve(undefined));
  });
}
