import { randomBytes } from "node:crypto";
import { type HashingKey, keyedHash } from "../../crds/api/index.ts";

/** `sk-pomona-` and 43 base64url characters: 256 random bits. */
export const mintKey = (): string => `sk-pomona-${randomBytes(32).toString("base64url")}`;

/** HMAC-SHA256 under the current hashing key: without that key, the hash cannot be checked against guesses. */
export const hashKey = (key: string, hashing: HashingKey): string => keyedHash(key, hashing);

/** Enough of the key to recognise it in a list, far too little to use it. */
export const keyPrefix = (key: string): string => key.slice(0, 14);

/** The annotation a user's Secret carries, naming the ApiKey that may read it (spec.secretRef). */
export const secretOptInAnnotation = "pomona.dev/api-key";
