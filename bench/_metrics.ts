/** Reading the components' Prometheus pages from a benchmark. */
import { get } from "node:http";
import { get as httpsGet } from "node:https";

/**
 * A page over a connection of its own that closes after it, so reading metrics leaves no socket open (https with
 * the given CA); undefined if it cannot be read.
 */
export function getOnce(url: string, ca?: string): Promise<string | undefined> {
  return new Promise((resolve) => {
    const options = { agent: false as const, timeout: 10_000 };
    const onResponse = (res: import("node:http").IncomingMessage) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (c: string) => {
        body += c;
      });
      res.on("end", () => resolve(res.statusCode === 200 ? body : undefined));
      res.on("error", () => resolve(undefined));
    };
    const req = url.startsWith("https:")
      ? httpsGet(url, { ...options, ca }, onResponse)
      : get(url, options, onResponse);
    req.on("error", () => resolve(undefined));
    req.on("timeout", () => req.destroy());
  });
}

/**
 * Sum of a metric's samples in a Prometheus text page, over every label set or only those whose labels
 * contain `having` (e.g. `outcome="busy"`); undefined if the page cannot be read.
 */
export async function metricSum(url: string, name: string, ca?: string, having?: string): Promise<number | undefined> {
  const text = await getOnce(url, ca);
  if (text === undefined) return undefined;
  return text
    .split("\n")
    .filter((l) => l.startsWith(`${name}{`) || l.startsWith(`${name} `))
    .filter((l) => having === undefined || l.slice(0, l.lastIndexOf(" ")).includes(having))
    .reduce((sum, l) => sum + Number(l.slice(l.lastIndexOf(" ") + 1)), 0);
}
