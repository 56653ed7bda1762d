import { createHash, randomBytes } from "node:crypto";

/** `sk-pomona-` and 43 base64url characters: 256 random bits. */
export const mintKey = (): string => `sk-pomona-${randomBytes(32).toString("base64url")}`;

export const hashKey = (key: string): string => createHash("sha256").update(key).digest("hex");

/** Enough of the key to recognise it in a list, far too little to use it. */
export const keyPrefix = (key: string): string => key.slice(0, 14);
