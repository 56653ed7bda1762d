/**
 * Lets a process load @kubernetes/client-node's KubeConfig without the generated API and model classes.
 * client-node's config module imports the generated code's index for one method, makeApiClient; that
 * index loads every generated API and model class: ~46 MiB of the operator's RSS, which calls the API
 * through kube/rest.ts instead (docs/decisions.md, "The operator calls the Kubernetes API through
 * kube/rest.ts"). This resolve hook hands config.js a stand-in with the two names it imports, which
 * throws if makeApiClient is ever called. Import it first, before anything imports client-node; the
 * process must import client-node's modules by path (dist/config.js, dist/watch.js) and never its
 * index, which would load the generated code anyway.
 */
import { registerHooks } from "node:module";

const standIn = `data:text/javascript,${encodeURIComponent(`
const unavailable = () => { throw new Error("client-node's generated API classes are not loaded in this process (kube/kube-config-only.ts)"); };
export const createConfiguration = unavailable;
export class ServerConfiguration { constructor() { unavailable(); } }
`)}`;

registerHooks({
  resolve(specifier, context, next) {
    if (specifier === "./gen/index.js" && context.parentURL?.endsWith("/@kubernetes/client-node/dist/config.js"))
      return { url: standIn, shortCircuit: true };
    return next(specifier, context);
  },
});
