// The Pulumi program: one PomonaStack configured from the stack's `pomona:*` config keys.
import * as pulumi from "@pulumi/pulumi";
import { settingKeys } from "./settings.ts";
import { PomonaStack } from "./stack.ts";

const config = new pulumi.Config("pomona");
const settings = Object.fromEntries(
  settingKeys.flatMap((key) => {
    // Scalars (namespace) are plain strings; the rest are objects set with `pulumi config set --path`.
    const value = key === "namespace" ? config.get(key) : config.getObject<unknown>(key);
    return value === undefined ? [] : [[key, value]];
  }),
);

const stack = new PomonaStack("pomona", {
  settings,
  installCrds: config.getBoolean("installCrds") ?? true,
  // For API servers without kubelets only (the tests'): no Pod ever becomes ready there.
  skipAwait: config.getBoolean("skipAwait") ?? false,
});

export const namespace = stack.namespace;
export const gatewayUrl = stack.gatewayUrl;
export const adminKeyCommand = stack.adminKeyCommand;
