/**
 * The few X.509 operations Pomona's node identity needs — an ECDSA P-256 key, a self-signed CA, a
 * certificate request, a certificate signed by the CA — on WebCrypto through @peculiar/x509, so no
 * openssl binary is needed on a node or in an image.
 */
import "reflect-metadata";
import { randomBytes, webcrypto } from "node:crypto";

type CryptoKey = webcrypto.CryptoKey;

import * as x509 from "@peculiar/x509";

x509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof x509.cryptoProvider.set>[0]);

const algorithm = { name: "ECDSA", namedCurve: "P-256", hash: "SHA-256" } as const;

export interface KeyPair {
  privateKey: CryptoKey;
  publicKey: CryptoKey;
}

/** A PEM certificate and its PEM PKCS#8 private key. */
export interface Credential {
  cert: string;
  key: string;
}

export interface SubjectAltName {
  type: "dns" | "ip";
  value: string;
}

export const generateKeyPair = (): Promise<KeyPair> =>
  webcrypto.subtle.generateKey(algorithm, true, ["sign", "verify"]) as Promise<KeyPair>;

export async function privateKeyPem(keys: KeyPair): Promise<string> {
  const base64 = Buffer.from(await webcrypto.subtle.exportKey("pkcs8", keys.privateKey)).toString("base64");
  const lines = base64.match(/.{1,64}/g) ?? [];
  return `-----BEGIN PRIVATE KEY-----\n${lines.join("\n")}\n-----END PRIVATE KEY-----\n`;
}

async function importPrivateKey(pem: string): Promise<CryptoKey> {
  const der = Buffer.from(pem.replace(/-----[A-Z ]+-----/g, "").replace(/\s+/g, ""), "base64");
  return webcrypto.subtle.importKey("pkcs8", der, algorithm, false, ["sign"]);
}

const serial = () => {
  const bytes = randomBytes(16);
  bytes[0] = bytes[0]! & 0x7f; // a positive integer
  return bytes.toString("hex");
};

/** A self-signed CA that may sign end-entity certificates only. */
/** PEM text ending in exactly one newline, so PEM blocks can be concatenated into a chain. */
const pem = (text: string) => `${text.replace(/\r\n/g, "\n").trimEnd()}\n`;

export async function createCertificateAuthority(commonName: string, lifetimeMs: number): Promise<Credential> {
  const keys = await generateKeyPair();
  const now = Date.now();
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: serial(),
    name: `CN=${commonName}`,
    notBefore: new Date(now - 60_000),
    notAfter: new Date(now + lifetimeMs),
    keys,
    signingAlgorithm: algorithm,
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
    ],
  });
  return { cert: pem(cert.toString("pem")), key: await privateKeyPem(keys) };
}

/** A PKCS#10 request, PEM, for `commonName` with the given subject alternative names. */
export async function createCertificateRequest(
  keys: KeyPair,
  commonName: string,
  altNames: SubjectAltName[],
): Promise<string> {
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({
    name: `CN=${commonName}`,
    keys,
    signingAlgorithm: algorithm,
    extensions: [new x509.SubjectAlternativeNameExtension(altNames)],
  });
  return pem(csr.toString("pem"));
}

export interface ParsedRequest {
  commonName: string | undefined;
  altNames: SubjectAltName[];
  /** Alternative names of other kinds (email, URI…), which Pomona never signs. */
  otherAltNames: number;
  /** Whether the request is signed by the key it carries (proof of possession). */
  signatureValid: boolean;
  publicKey: x509.PublicKey;
}

export async function parseCertificateRequest(pem: string): Promise<ParsedRequest> {
  const request = new x509.Pkcs10CertificateRequest(pem);
  const san = request.extensions.find((e) => e instanceof x509.SubjectAlternativeNameExtension) as
    | x509.SubjectAlternativeNameExtension
    | undefined;
  const names = san?.names.toJSON() ?? [];
  const altNames = names.filter((n): n is SubjectAltName => n.type === "dns" || n.type === "ip");
  return {
    commonName: request.subjectName.getField("CN")[0],
    altNames,
    otherAltNames: names.length - altNames.length,
    signatureValid: await request.verify(),
    publicKey: request.publicKey,
  };
}

export type Usage = "server" | "client";

/** Sign a certificate for `commonName` and `altNames` with the CA, for a requested public key or a key pair. */
export async function signCertificate(options: {
  ca: Credential;
  commonName: string;
  altNames: SubjectAltName[];
  publicKey: x509.PublicKey | KeyPair;
  usage: Usage;
  lifetimeMs: number;
}): Promise<string> {
  const ca = new x509.X509Certificate(options.ca.cert);
  const now = Date.now();
  const publicKey = "publicKey" in options.publicKey ? options.publicKey.publicKey : options.publicKey;
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: serial(),
    subject: `CN=${options.commonName}`,
    issuer: ca.subject,
    notBefore: new Date(now - 60_000),
    notAfter: new Date(now + options.lifetimeMs),
    publicKey,
    signingKey: await importPrivateKey(options.ca.key),
    signingAlgorithm: algorithm,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
      new x509.ExtendedKeyUsageExtension([
        options.usage === "server" ? x509.ExtendedKeyUsage.serverAuth : x509.ExtendedKeyUsage.clientAuth,
      ]),
      ...(options.altNames.length ? [new x509.SubjectAlternativeNameExtension(options.altNames)] : []),
    ],
  });
  return pem(cert.toString("pem"));
}

/** Validity of a PEM certificate, in ms since the epoch. */
export function validityOf(pem: string): { notBefore: number; notAfter: number } {
  const cert = new x509.X509Certificate(pem);
  return { notBefore: cert.notBefore.getTime(), notAfter: cert.notAfter.getTime() };
}

/** When to renew: two thirds into the certificate's life. */
export function renewAt(pem: string): number {
  const { notBefore, notAfter } = validityOf(pem);
  return notBefore + ((notAfter - notBefore) * 2) / 3;
}
