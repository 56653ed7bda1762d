/**
 * How the gateway reaches node-agents. `plainTransport`: HTTP with the node token, for a node-agent run
 * with POMONA_NODE_TLS=off. `MutualTlsTransport` (the default): TLS 1.3 with the client certificate the
 * operator mints for the gateway, and a node's certificate must be signed by the node CA, name the
 * endpoint's address and carry the common name of the node the endpoint belongs to — so an endpoint that
 * is not that node's gets a failed handshake, and never the token or a prompt. Connections are kept alive
 * and reused within a pool per node and address. A new credential (a rotation) goes into new pools;
 * requests on the old ones finish.
 */
import { type ClientRequest, Agent as HttpAgent, request as httpRequest, type RequestOptions } from "node:http";
import { Agent as HttpsAgent, request as httpsRequest } from "node:https";
import { checkServerIdentity, createSecureContext, type PeerCertificate, type SecureContext } from "node:tls";
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
 * A pool no longer used (a previous credential's, or the least recently used one): requests in flight keep
 * their connections to the end; idle connections close now, busy ones when their request ends, and whatever
 * is left after RETIRE_AFTER_MS.
 */
function retire(agent: HttpsAgent): void {
  // Read by the agent each time a request ends: false closes the connection instead of pooling it.
  (agent as HttpsAgent & { keepAlive: boolean }).keepAlive = false;
  for (const sockets of Object.values(agent.freeSockets)) for (const socket of sockets ?? []) socket.destroy();
  setTimeout(() => agent.destroy(), RETIRE_AFTER_MS).unref();
}

/** Pools kept at once (one per node and address; the design's fleet is 500 nodes); the least recently used goes. */
export const MAX_NODE_POOLS = 4096;

export class MutualTlsTransport implements NodeTransport {
  private secureContext: SecureContext | undefined;
  /**
   * One connection pool per node and address, whose own options hold the check of that node's certificate.
   * A check passed per request instead would stop Node reusing the connection (an https.Agent never pools a
   * socket verified by a per-request checkServerIdentity), so every call would pay a full TLS handshake.
   * Most recently used last.
   */
  private pools = new Map<string, HttpsAgent>();

  get ready(): boolean {
    return this.secureContext !== undefined;
  }

  /** Use this credential for new connections from now on. */
  use(credential: ClientCredential): void {
    const previous = this.pools;
    // Parsed once, not per connection.
    this.secureContext = createSecureContext({ ...credential, minVersion: "TLSv1.3" });
    this.pools = new Map();
    for (const agent of previous.values()) retire(agent);
  }

  request(url: string, node: string, options: RequestOptions): ClientRequest {
    return httpsRequest(url, { ...options, agent: this.poolOf(node, new URL(url).hostname) });
  }

  /** The pool of connections to this node at this address; each was verified as the node's when it opened. */
  private poolOf(node: string, host: string): HttpsAgent {
    const key = `${node} ${host}`;
    let agent = this.pools.get(key);
    if (agent) {
      this.pools.delete(key);
      this.pools.set(key, agent);
      return agent;
    }
    agent = new HttpsAgent({
      ...poolOptions,
      secureContext: this.secureContext,
      checkServerIdentity: (_servername: string, cert: PeerCertificate) => {
        const mismatch = checkServerIdentity(host, cert);
        if (mismatch) return mismatch;
        if (cert.subject?.CN !== nodeIdentity.nodeCommonName(node)) {
          return new Error(`the certificate at ${host} does not belong to node ${node}`);
        }
        return undefined;
      },
    });
    if (this.pools.size >= MAX_NODE_POOLS) {
      const [oldest, pool] = this.pools.entries().next().value as [string, HttpsAgent];
      this.pools.delete(oldest);
      retire(pool);
    }
    this.pools.set(key, agent);
    return agent;
  }

  close(): void {
    for (const agent of this.pools.values()) agent.destroy();
    this.pools.clear();
  }
}
