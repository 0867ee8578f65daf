import { Cache, Clock, Context, Duration, Effect, Exit, Layer } from "effect"
import { AuthError } from "../domain/Errors.js"
import { readClaims } from "../domain/Token.js"
import { Logic } from "./ports/Logic.js"

export interface Principal {
  readonly username: string
  /** Unix milliseconds after which the token is no longer valid, when known. */
  readonly expiresAt: number | undefined
}

export interface AuthenticatorShape {
  readonly authenticate: (token: string | undefined) => Effect.Effect<Principal, AuthError>
  /** Logout: the token is refused from now on by this gateway, until it expires. */
  readonly revoke: (token: string) => Effect.Effect<void>
}

export interface AuthenticatorOptions {
  /** How long a positive answer of Logic is reused; 0 asks Logic every time (an in-process Logic is cheap). */
  readonly cacheTtl?: Duration.DurationInput
  readonly cacheCapacity?: number
}

/** token → username, through Logic.validateToken behind a short-lived cache. */
export class Authenticator extends Context.Tag("resonance/Authenticator")<Authenticator, AuthenticatorShape>() {
  static readonly layer = (options: AuthenticatorOptions = {}) =>
    Layer.effect(
      Authenticator,
      Effect.gen(function*() {
        const logic = yield* Logic
        const ttl = Duration.decode(options.cacheTtl ?? "30 seconds")
        const revoked = new Map<string, number>()
        const cache = yield* Cache.makeWith({
          capacity: options.cacheCapacity ?? 50_000,
          lookup: (token: string) => logic.validateToken(token),
          timeToLive: (exit) => (Exit.isSuccess(exit) ? ttl : Duration.zero)
        })

        const authenticate = (token: string | undefined) =>
          Effect.gen(function*() {
            if (token === undefined || token === "") {
              return yield* new AuthError({ reason: "Missing", message: "missing access token" })
            }
            const now = yield* Clock.currentTimeMillis
            const claims = readClaims(token)
            if (claims?.expiresAt !== undefined && claims.expiresAt <= now) {
              return yield* new AuthError({ reason: "Expired", message: "access token expired" })
            }
            if (revoked.has(token)) {
              return yield* new AuthError({ reason: "Invalid", message: "access token was revoked" })
            }
            const lookup = Duration.isZero(ttl) ? logic.validateToken(token) : cache.get(token)
            const user = yield* lookup.pipe(
              // Outages and refusals are not remembered: only a valid answer is.
              Effect.tapError(() => cache.invalidate(token)),
              Effect.mapError((error) =>
                error.code === "unavailable" || error.code === "deadline_exceeded"
                  ? new AuthError({ reason: "Unavailable", message: error.message })
                  : new AuthError({ reason: "Invalid", message: error.message || "invalid access token" })
              )
            )
            return { username: user.username, expiresAt: claims?.expiresAt }
          })

        const revoke = (token: string) =>
          Effect.gen(function*() {
            const now = yield* Clock.currentTimeMillis
            for (const [entry, until] of revoked) if (until <= now) revoked.delete(entry)
            revoked.set(token, readClaims(token)?.expiresAt ?? now + 24 * 3600_000)
            yield* cache.invalidate(token)
          })

        return { authenticate, revoke }
      })
    )
}
