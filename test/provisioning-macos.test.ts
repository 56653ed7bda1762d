// The launchd definition for a Mac's node-agent: it runs the agent with Node 24 from the project, sets
// only variables docs/components.md documents for the node-agent, and points at secret files, never values.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, test } from "vitest";
import { repoRoot } from "./support/crds.ts";

const plist = readFileSync(join(repoRoot, "deploy/macos/dev.pomona.node-agent.plist"), "utf8");
const components = readFileSync(join(repoRoot, "docs/components.md"), "utf8");

/** The <string>s of an <array> or the key/string pairs of a <dict> after a given <key>. */
function section(key: string): string {
  const start = plist.indexOf(`<key>${key}</key>`);
  expect(start, `plist key ${key}`).toBeGreaterThan(-1);
  const open = plist.slice(start).match(/<(array|dict)>/)!;
  const from = start + open.index!;
  return plist.slice(from, plist.indexOf(`</${open[1]}>`, from));
}

describe("deploy/macos/dev.pomona.node-agent.plist", () => {
  test("is a well-formed plist labelled dev.pomona.node-agent, restarted by launchd after a crash", () => {
    expect(plist).toMatch(/^<\?xml version="1\.0" encoding="UTF-8"\?>\n<!DOCTYPE plist PUBLIC/);
    expect(plist.match(/<dict>/g)?.length).toBe(plist.match(/<\/dict>/g)?.length);
    expect(plist).toMatch(/<key>Label<\/key>\s*<string>dev\.pomona\.node-agent<\/string>/);
    expect(plist).toMatch(/<key>SuccessfulExit<\/key>\s*<false\/>/);
  });

  test("runs node-agent/main.ts with the project's Node 24", () => {
    const args = [...section("ProgramArguments").matchAll(/<string>([^<]*)<\/string>/g)].map((m) => m[1]);
    expect(args).toEqual(["/opt/pomona/node_modules/.bin/node", "node-agent/main.ts"]);
  });

  test("sets only documented node-agent variables, in virtual mode, with the token as a file", () => {
    const env = Object.fromEntries(
      [...section("EnvironmentVariables").matchAll(/<key>([^<]+)<\/key>\s*<string>([^<]*)<\/string>/g)].map((m) => [
        m[1],
        m[2],
      ]),
    );
    const nodeAgentTable = components.slice(components.indexOf("## node-agent"), components.indexOf("## gateway"));
    for (const name of Object.keys(env)) {
      if (name === "KUBECONFIG") continue;
      expect(nodeAgentTable, `${name} is documented for the node-agent`).toContain(`\`${name}\``);
    }
    expect(env.POMONA_NODE_MODE).toBe("virtual");
    expect(env.POMONA_NODE_TOKEN_FILE).toMatch(/^\//);
    expect(env).not.toHaveProperty("POMONA_NODE_TOKEN");
  });
});
