/**
 * Which IP addresses a model download may connect to: public unicast only. Loopback, private, link-local
 * (cloud metadata at 169.254.169.254 included), carrier-grade NAT, multicast, documentation and other
 * special ranges are refused, for IPv4 and IPv6 alike, and IPv6 forms that embed an IPv4 address
 * (mapped, NAT64, 6to4) are judged by it or refused.
 */
import { BlockList, isIP } from "node:net";

const special = new BlockList();
for (const [net, bits] of [
  ["0.0.0.0", 8],
  ["10.0.0.0", 8],
  ["100.64.0.0", 10],
  ["127.0.0.0", 8],
  ["169.254.0.0", 16],
  ["172.16.0.0", 12],
  ["192.0.0.0", 24],
  ["192.0.2.0", 24],
  ["192.88.99.0", 24],
  ["192.168.0.0", 16],
  ["198.18.0.0", 15],
  ["198.51.100.0", 24],
  ["203.0.113.0", 24],
  ["224.0.0.0", 4],
  ["240.0.0.0", 4],
] as const)
  special.addSubnet(net, bits, "ipv4");
for (const [net, bits] of [
  ["::", 128],
  ["::1", 128],
  // IPv4-mapped in hex form (::ffff:7f00:1); the dotted form is judged by its IPv4 address above.
  ["::ffff:0:0", 96],
  ["64:ff9b::", 96],
  ["64:ff9b:1::", 48],
  ["100::", 64],
  ["2001::", 32],
  ["2001:db8::", 32],
  ["2002::", 16],
  ["fc00::", 7],
  ["fe80::", 10],
  ["fec0::", 10],
  ["ff00::", 8],
] as const)
  special.addSubnet(net, bits, "ipv6");

/** What kind of address it is, for messages: "loopback", "private", "link-local" or "special-purpose". */
export function nonPublicKind(address: string): string | undefined {
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address)?.[1];
  if (mapped) return nonPublicKind(mapped);
  const family = isIP(address);
  if (family === 0) return "special-purpose";
  if (!special.check(address, family === 4 ? "ipv4" : "ipv6")) return undefined;
  if (family === 4) {
    if (address.startsWith("127.")) return "loopback";
    if (address.startsWith("169.254.")) return "link-local";
    if (/^(10\.|192\.168\.|172\.(1[6-9]|2\d|3[01])\.)/.test(address)) return "private";
    return "special-purpose";
  }
  const lower = address.toLowerCase();
  if (lower === "::1") return "loopback";
  if (/^fe[89ab]/.test(lower)) return "link-local";
  if (/^f[cd]/.test(lower)) return "private";
  return "special-purpose";
}
