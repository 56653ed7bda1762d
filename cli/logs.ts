/** `pomona logs [component]`: the logs `pomona up` writes, one file per component. */
import { spawn } from "node:child_process";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";

export async function logs(stateDir: string, component: string | undefined, follow: boolean): Promise<void> {
  const dir = join(stateDir, "logs");
  if (!existsSync(dir)) throw new Error(`no logs in ${dir}: run \`pomona up\` first`);
  const files = readdirSync(dir)
    .filter((f) => f.endsWith(".log") && (!component || f === `${component}.log`))
    .map((f) => join(dir, f));
  if (files.length === 0) throw new Error(`no log for ${component}; have: ${readdirSync(dir).join(", ")}`);
  if (follow) {
    const tail = spawn("tail", ["-n", "50", "-F", ...files], { stdio: "inherit" });
    await new Promise((resolve) => tail.on("exit", resolve));
    return;
  }
  for (const file of files) process.stdout.write(readFileSync(file, "utf8"));
}
