/**
 * How the gateway reaches node-agents. `plainTransport`: HTTP with the node token, for a node-agent run
 * with POMONA_NODE_TLS=off. `MutualTlsTransport` (the default): TLS 1.3 with the client certificate the
 * operator mints for the gateway, and a node's certificate must be signed by the node CA, name the
 * endpoint's address and carry the common name of the node the endpoint belongs to — so an endpoint that
 * is not that node's gets a failed handshake, and never the token or a prompt. A new credential (a
 * rotation) goes into a new connection pool; requests on the old one finish.
 */
import { type ClientRequest, Agent as HttpAgent, request as httpRequest, type RequestOptions } from "node:http";
import { Agent as HttpsAgent, request as httpsRequest } from "node:https";
import { checkServerIdentity, type PeerCertificate } from "node:tls";
import { nodeIdentity } from "../../crds/api/index.ts";

export interface NodeTransport {
  /** Whether a request may go out now (mutual TLS needs its credential first). */
  readonly ready: boolean;
  request(url: string, node: string, options: RequestOptions): ClientRequest;
  close(): void;
}

const poolOptions = { keepAlive: true, maxSockets: 1024, keepAliveMsecs: 10_000 };

export function plainTransport(): NodeTransport {
  const agent = new HttpAgent(poolOptions);
  return {
    ready: true,
    request: (url, _node, options) => httpRequest(url, { ...options, agent }),
    close: () => agent.destroy(),
  };
}

export interface ClientCredential {
  cert: string;
  key: string;
  ca: string;
}

/** Longer than any answer may take (the gateway's total timeout is at most this by default). */
const RETIRE_AFTER_MS = 15 * 60_000;

/**
 * An agent with the previous credential: requests in flight keep their connections to the end; idle
 * connections close now, busy ones when their request ends, and whatever is left after RETIRE_AFTER_MS.
 */
function retire(agent: HttpsAgent): void {
  // Read by the agent each time a request ends: false closes the connection instead of pooling it.
  (agent as HttpsAgent & { keepAlive: boolean }).keepAlive = false;
  for (const sockets of Object.values(agent.freeSockets)) for (const socket of sockets ?? []) socket.destroy();
  setTimeout(() => agent.destroy(), RETIRE_AFTER_MS).unref();
}

export class MutualTlsTransport implements NodeTransport {
  private agent: HttpsAgent | undefined;

  get ready(): boolean {
    return this.agent !== undefined;
  }

  /** Use this credential for new connections from now on. */
  use(credential: ClientCredential): void {
    const previous = this.agent;
    this.agent = new HttpsAgent({ ...poolOptions, ...credential, minVersion: "TLSv1.3" });
    if (previous) retire(previous);
  }

  request(url: string, node: string, options: RequestOptions): ClientRequest {
    const host = new URL(url).hostname;
    return httpsRequest(url, {
      ...options,
      agent: this.agent,
      // Part of the pool's key, so a connection verified for one node is never reused for another.
      servername: node,
      checkServerIdentity: (_servername: string, cert: PeerCertificate) => {
        const mismatch = checkServerIdentity(host, cert);
        if (mismatch) return mismatch;
        if (cert.subject?.CN !== nodeIdentity.nodeCommonName(node)) {
          return new Error(`the certificate at ${host} does not belong to node ${node}`);
        }
        return undefined;
      },
    });
  }

  close(): void {
    this.agent?.destroy();
  }
}
