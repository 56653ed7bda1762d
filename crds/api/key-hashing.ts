/**
 * How API keys are hashed for the gateway config: HMAC-SHA256 under a secret
 * that only the operator and the gateway can read, kept in the Secret
 * `pomona-key-hashing` of the system namespace. An unsalted sha256 of a key
 * could be checked against guesses by anyone who reads the config or an
 * ApiKey's status; an HMAC cannot without the secret.
 *
 * The Secret holds `current` (the operator hashes every key under it) and,
 * during a rotation, `previous` (gateways still accept hashes made under it
 * until the operator has hashed every key again). See docs/security.md.
 */
import { createHash, createHmac, createSecretKey, type KeyObject } from "node:crypto";

/** The Secret (system namespace) that holds the HMAC keys. */
export const keyHashingSecret = "pomona-key-hashing";
/** Data keys of that Secret: raw bytes, at least `minHashingKeyBytes` long. */
export const keyHashingDataKeys = { current: "current", previous: "previous" } as const;
export const minHashingKeyBytes = 32;

export interface HashingKey {
  /** A short, public name for the key: the first 12 hex digits of sha256 of it. Reveals nothing usable. */
  id: string;
  bytes: Buffer;
  /** The same bytes as a KeyObject: createHmac with it took 4 µs a call, with a Buffer 42 µs (Node 24). */
  secret: KeyObject;
}

export interface HashingKeys {
  current: HashingKey;
  previous?: HashingKey;
}

export const hashingKey = (bytes: Buffer): HashingKey => ({
  id: createHash("sha256").update(bytes).digest("hex").slice(0, 12),
  bytes,
  secret: createSecretKey(bytes),
});

/** HMAC-SHA256 of an API key under one hashing key, hex: the `hash` of a key in the gateway config. */
export const keyedHash = (key: string, hashing: HashingKey): string =>
  createHmac("sha256", hashing.secret).update(key).digest("hex");

/** The Secret's data (base64 values, as the API returns them) as hashing keys; throws with a message naming no value. */
export function parseHashingKeys(data: Record<string, string> | undefined): HashingKeys {
  const read = (name: string): HashingKey | undefined => {
    const value = data?.[name];
    if (value === undefined || value === "") return undefined;
    const bytes = Buffer.from(value, "base64");
    if (bytes.length < minHashingKeyBytes)
      throw new Error(`Secret ${keyHashingSecret}: data key ${name} must hold at least ${minHashingKeyBytes} bytes`);
    return hashingKey(bytes);
  };
  const current = read(keyHashingDataKeys.current);
  if (!current) throw new Error(`Secret ${keyHashingSecret} has no data key ${keyHashingDataKeys.current}`);
  const previous = read(keyHashingDataKeys.previous);
  return previous && previous.id !== current.id ? { current, previous } : { current };
}
