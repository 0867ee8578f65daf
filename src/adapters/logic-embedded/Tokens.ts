import { randomBytes, randomUUID, webcrypto } from "node:crypto"
import * as fs from "node:fs"
import * as path from "node:path"
import { errors as joseErrors, jwtVerify, SignJWT } from "jose"
import { tokenIdOf } from "../../domain/Token.js"

export const TOKEN_ISSUER = "resonance-service"
export const SECRET_FILE_NAME = "jwt-secret"

export type TokenCheck =
  | {
    readonly _tag: "Valid"
    readonly username: string
    /** `tokenIdOf` the token: its jti, or the whole token when it has none. */
    readonly tokenId: string
    /** Unix seconds. */
    readonly expiresAt: number
  }
  | { readonly _tag: "Expired" }
  | { readonly _tag: "Invalid" }

export interface TokenSigner {
  readonly sign: (username: string, nowMs: number) => Promise<string>
  readonly verify: (token: string, nowMs: number) => Promise<TokenCheck>
}

export const makeTokenSigner = (secret: string, ttlSeconds: number): TokenSigner => {
  // Imported once: jose would import raw key bytes again on every sign and verify.
  let imported: Promise<webcrypto.CryptoKey> | undefined
  const keyOf = () =>
    imported ??= webcrypto.subtle.importKey(
      "raw",
      new TextEncoder().encode(secret),
      { name: "HMAC", hash: "SHA-256" },
      false,
      ["sign", "verify"]
    )
  return {
    sign: async (username, nowMs) => {
      const issuedAt = Math.floor(nowMs / 1000)
      const key = await keyOf()
      return new SignJWT({})
        .setProtectedHeader({ alg: "HS256", typ: "JWT" })
        .setSubject(username)
        .setIssuer(TOKEN_ISSUER)
        .setIssuedAt(issuedAt)
        .setExpirationTime(issuedAt + ttlSeconds)
        // Names the token in a revocation (Logout), shorter than the token itself.
        .setJti(randomUUID())
        .sign(key)
    },
    verify: async (token, nowMs) => {
      try {
        const { payload } = await jwtVerify(token, await keyOf(), {
          algorithms: ["HS256"],
          issuer: TOKEN_ISSUER,
          currentDate: new Date(nowMs),
          requiredClaims: ["sub", "exp"]
        })
        return payload.sub
          ? {
            _tag: "Valid",
            username: payload.sub,
            tokenId: tokenIdOf(token),
            expiresAt: payload.exp!
          }
          : { _tag: "Invalid" }
      } catch (error) {
        return error instanceof joseErrors.JWTExpired ? { _tag: "Expired" } : { _tag: "Invalid" }
      }
    }
  }
}

/**
 * The secret kept next to the database, created once (mode 0600) so tokens survive restarts.
 * Creation uses O_EXCL, so two processes starting together end up with the same secret.
 */
export const loadOrCreateSecret = (databasePath: string): string => {
  if (databasePath === ":memory:" || databasePath === "") return randomBytes(32).toString("hex")
  const file = path.join(path.dirname(path.resolve(databasePath)), SECRET_FILE_NAME)
  const fresh = randomBytes(32).toString("hex")
  try {
    fs.writeFileSync(file, fresh + "\n", { flag: "wx", mode: 0o600 })
    return fresh
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== "EEXIST") throw error
  }
  const stored = fs.readFileSync(file, "utf8").trim()
  if (stored.length < 32) throw new Error(`${file} holds no usable secret (fewer than 32 characters)`)
  return stored
}
