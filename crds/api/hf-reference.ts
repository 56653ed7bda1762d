/**
 * How an `hf:` model source maps to a download: the node-agent fetches the file from this URL and the
 * operator reads its GGUF header from it to size a replica, so both must agree.
 */
export const defaultHfEndpoint = "https://huggingface.co";

/** hf:owner/repo/path/file.gguf → the file on the repository's main revision; undefined for hf:owner/repo:quant. */
export function hfFileUrl(reference: string, endpoint = defaultHfEndpoint): string | undefined {
  const match = /^hf:([^/:]+)\/([^/:]+)\/(.+\.gguf)$/.exec(reference);
  return match ? `${endpoint.replace(/\/+$/, "")}/${match[1]}/${match[2]}/resolve/main/${match[3]}` : undefined;
}
