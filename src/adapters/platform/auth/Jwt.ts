import { Config, Duration, Effect, Either, Layer, Option } from "effect"
import type { ConfigError } from "effect"
import { createSigner, createVerifier } from "fast-jwt"
import { randomUUID } from "node:crypto"
import type { TokenCheck } from "../../../application/ports/TokenVerifier.js"
import { TokenVerifier } from "../../../application/ports/TokenVerifier.js"
import { MIN_SECRET_BYTES } from "../../../domain/Token.js"
import { duration, invalidData } from "../config/Settings.js"

/** The `iss` of every access token a Logic of ours signs, and that a gateway accepts. */
export const TOKEN_ISSUER = "resonance-service"

/**
 * HS256 access tokens with fast-jwt, synchronously (a WebCrypto promise per token cost a
 * reconnect storm a microtask and an allocation per connect): the embedded Logic signs and checks
 * with it, and a gateway that knows the key checks tokens without asking Logic.
 */
export interface Jwt {
  /** A token for `username`, issued at `nowMs`, valid `ttlSeconds`, with its own `jti` (what a Logout revokes). */
  readonly sign: (username: string, nowMs: number) => string
  /** Signature (HS256 only), issuer, subject and expiry (against `nowMs`, the caller's clock). */
  readonly check: (token: string, nowMs: number) => TokenCheck
}

const invalid: TokenCheck = { _tag: "Invalid" }
const expired: TokenCheck = { _tag: "Expired" }

export const makeJwt = (secret: string, ttlSeconds: number): Jwt => {
  // Every claim is set here, `iat` from the caller's clock (fast-jwt keeps a given `iat`).
  const signer = createSigner({ key: secret, algorithm: "HS256" })
  // Expiry is compared here against the caller's clock, so the verifier's own check is off. No
  // fast-jwt cache: hashing each token for it cost more than verifying (20.6 against 8.4 µs per
  // first check, measured), and a reconnect storm brings tokens it has not seen. The issuer is
  // compared here too: fast-jwt's claim validator for it cost 4 µs per token in a fresh process
  // (5,000 distinct tokens: 19.0-19.7 µs per check with it, 15.4-15.8 without).
  const verifier = createVerifier({
    key: secret,
    algorithms: ["HS256"],
    requiredClaims: ["sub", "exp"],
    ignoreExpiration: true,
    ignoreNotBefore: true,
    cache: false
  })
  return {
    sign: (username, nowMs) => {
      const issuedAt = Math.floor(nowMs / 1000)
      return signer({ sub: username, iss: TOKEN_ISSUER, iat: issuedAt, exp: issuedAt + ttlSeconds, jti: randomUUID() })
    },
    check: (token, nowMs) => {
      let payload: { readonly sub?: unknown; readonly exp?: unknown; readonly iss?: unknown }
      try {
        payload = verifier(token)
      } catch {
        return invalid
      }
      // As fast-jwt's `allowedIss` did: a token without `iss` passes, any other issuer does not.
      if (payload.iss !== undefined && payload.iss !== TOKEN_ISSUER) return invalid
      if (typeof payload.sub !== "string" || payload.sub === "" || typeof payload.exp !== "number") return invalid
      if (payload.exp * 1000 <= nowMs) return expired
      // The id a Logout revokes: the jti, or the whole token when it has none (domain/Token.ts).
      const jti = (payload as { readonly jti?: unknown }).jti
      return { _tag: "Valid", username: payload.sub, tokenId: typeof jti === "string" && jti !== "" ? jti : token, expiresAt: payload.exp }
    }
  }
}

/** `auth.secret_key` and `auth.token_ttl`: the key tokens are signed with (the embedded Logic's, or a cluster's shared one). */
export const tokenSettings = Config.nested(
  Config.all({
    secretKey: Config.option(Config.string("secret_key")).pipe(
      Config.map((value) => Option.getOrUndefined(Option.filter(value, (s) => s !== ""))),
      Config.mapOrFail((secret) =>
        secret !== undefined && Buffer.byteLength(secret) < MIN_SECRET_BYTES
          ? Either.left(invalidData(
            ["secret_key"],
            `must be at least ${MIN_SECRET_BYTES} bytes (it signs every token); leave it unset to have one generated`
          ))
          : Either.right(secret)
      )
    ),
    tokenTtl: duration("token_ttl", "24h")
  }),
  "auth"
)

/**
 * A gateway that shares `auth.secret_key` with its Logic checks tokens itself, synchronously;
 * without the key nothing is provided and tokens go to `Logic.validateToken`.
 */
export const layerVerifierConfig: Layer.Layer<never, ConfigError.ConfigError> = Layer.unwrapEffect(
  Effect.map(tokenSettings, ({ secretKey, tokenTtl }): Layer.Layer<never> => {
    if (secretKey === undefined) return Layer.empty
    const jwt = makeJwt(secretKey, Duration.toSeconds(tokenTtl))
    return Layer.succeed(TokenVerifier, { verify: jwt.check })
  })
)
