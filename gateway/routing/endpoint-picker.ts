/**
 * Chooses the endpoint of a model for a request: the least outstanding
 * requests (relative to weight) of two endpoints drawn at random by weight,
 * which spreads load almost as well as looking at all and never herds. A
 * conversation's prefix prefers one endpoint (rendezvous hashing over the
 * endpoints that can take it), so the node's KV cache for that prefix is
 * reused, unless that endpoint is busier than the best by more than
 * AFFINITY_SLACK requests.
 */
import { createHash } from "node:crypto";
import type { GatewayEndpoint } from "../../crds/api/index.ts";

export const AFFINITY_SLACK = 2;

export class EndpointLoad {
  private readonly outstanding = new Map<string, number>();

  of(url: string): number {
    return this.outstanding.get(url) ?? 0;
  }

  acquire(url: string): () => void {
    this.outstanding.set(url, this.of(url) + 1);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const n = this.of(url) - 1;
      if (n <= 0) this.outstanding.delete(url);
      else this.outstanding.set(url, n);
    };
  }
}

export function pickEndpoint(
  candidates: readonly GatewayEndpoint[],
  load: EndpointLoad,
  affinity: string | undefined,
  random: () => number = Math.random,
): GatewayEndpoint | undefined {
  if (candidates.length <= 1) return candidates[0];
  const score = (e: GatewayEndpoint) => (load.of(e.url) + 1) / e.weight;

  const a = drawByWeight(candidates, random);
  let b = drawByWeight(candidates, random);
  if (b === a) b = candidates[(candidates.indexOf(a) + 1) % candidates.length]!;
  const balanced = score(b) < score(a) ? b : a;

  if (affinity === undefined) return balanced;
  const preferred = rendezvous(candidates, affinity);
  const least = Math.min(...candidates.map((e) => load.of(e.url)));
  return load.of(preferred.url) <= least + AFFINITY_SLACK ? preferred : balanced;
}

function drawByWeight(candidates: readonly GatewayEndpoint[], random: () => number): GatewayEndpoint {
  let total = 0;
  for (const e of candidates) total += e.weight;
  let r = random() * total;
  for (const e of candidates) {
    r -= e.weight;
    if (r < 0) return e;
  }
  return candidates[candidates.length - 1]!;
}

function rendezvous(candidates: readonly GatewayEndpoint[], affinity: string): GatewayEndpoint {
  let best = candidates[0]!;
  let bestScore = -1;
  for (const e of candidates) {
    const s = createHash("sha1").update(affinity).update(e.url).digest().readUInt32BE(0);
    if (s > bestScore) {
      bestScore = s;
      best = e;
    }
  }
  return best;
}

/**
 * The affinity of a chat: a hash of its messages up to and including the first
 * user message (the system prompt and the opening question), which stay the
 * same on every turn of one conversation.
 */
export function conversationAffinity(messages: readonly { role: string; content?: unknown }[]): string | undefined {
  if (messages.length === 0) return undefined;
  const h = createHash("sha1");
  for (const m of messages) {
    h.update(m.role)
      .update("\0")
      .update(JSON.stringify(m.content ?? ""))
      .update("\0");
    if (m.role === "user") break;
  }
  return h.digest("hex");
}
