import { Context, Layer } from "effect"

/** What a local check of an access token found. `expiresAt` in unix seconds. */
export type TokenCheck =
  | { readonly _tag: "Valid"; readonly username: string; readonly tokenId: string; readonly expiresAt: number }
  | { readonly _tag: "Expired" }
  | { readonly _tag: "Invalid" }

/**
 * Checks an access token's signature, algorithm, issuer and expiry here, synchronously, where the
 * signing key is known (the embedded Logic's, or `auth.secret_key` shared with a cluster's Logic):
 * a reconnect storm then costs no Logic call and no promise per token. Where no key is known there
 * is no verifier, and tokens go to `Logic.validateToken`.
 */
export interface TokenVerifierShape {
  /** Plain and synchronous; expiry judged against `nowMs` (the caller's clock). */
  readonly verify: (token: string, nowMs: number) => TokenCheck
}

export class TokenVerifier extends Context.Tag("resonance/TokenVerifier")<TokenVerifier, TokenVerifierShape>() {
  /** Tokens `tok-<username>` are valid for an hour from now; `expired-<x>` expired; anything else invalid. */
  static readonly layerTest: Layer.Layer<TokenVerifier> = Layer.succeed(TokenVerifier, {
    verify: (token, nowMs) =>
      token.startsWith("tok-")
        ? { _tag: "Valid", username: token.slice(4), tokenId: token, expiresAt: Math.floor(nowMs / 1000) + 3600 }
        : token.startsWith("expired-")
        ? { _tag: "Expired" }
        : { _tag: "Invalid" }
  })
}
