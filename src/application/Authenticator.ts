import { Cache, Clock, Context, Duration, Effect, Exit, Layer } from "effect"
import { CloseCodes } from "../domain/Connection.js"
import { AuthError } from "../domain/Errors.js"
import type { Revocation } from "../domain/Model.js"
import { readClaims, tokenIdOf } from "../domain/Token.js"
import { ConnectionHub } from "./ConnectionHub.js"
import { Logic } from "./ports/Logic.js"

export interface Principal {
  readonly username: string
  /** Unix milliseconds after which the token is no longer valid, when known. */
  readonly expiresAt: number | undefined
  /** `tokenIdOf` the token, which a revocation names. */
  readonly tokenId: string
}

export interface AuthenticatorShape {
  readonly authenticate: (token: string | undefined) => Effect.Effect<Principal, AuthError>
  /**
   * Logout: Logic stores the revocation (every gateway follows it, restarts included), and the
   * sockets opened here with the token are closed with 4001 at once.
   */
  readonly revoke: (token: string) => Effect.Effect<void, AuthError>
}

export interface AuthenticatorOptions {
  /** How long a positive answer of Logic is reused; 0 asks Logic every time (an in-process Logic is cheap). */
  readonly cacheTtl?: Duration.DurationInput
  readonly cacheCapacity?: number
  /**
   * How often to read Logic's revocation log, so tokens revoked through another gateway are refused
   * here and their sockets closed; undefined for a Logic only this gateway uses.
   */
  readonly revocationPoll?: Duration.DurationInput
}

const REVOCATION_PAGE = 500

const unavailable = (code: string) => code === "unavailable" || code === "deadline_exceeded"

/** token → username, through Logic.validateToken behind a short-lived cache; revocations followed. */
export class Authenticator extends Context.Tag("resonance/Authenticator")<Authenticator, AuthenticatorShape>() {
  static readonly layer = (options: AuthenticatorOptions = {}) =>
    Layer.scoped(
      Authenticator,
      Effect.gen(function*() {
        const logic = yield* Logic
        const hub = yield* ConnectionHub
        const ttl = Duration.decode(options.cacheTtl ?? "30 seconds")
        /** tokenId → unix ms until which the revocation matters. */
        const revoked = new Map<string, number>()
        const cache = yield* Cache.makeWith({
          capacity: options.cacheCapacity ?? 50_000,
          lookup: (token: string) => logic.validateToken(token),
          timeToLive: (exit) => (Exit.isSuccess(exit) ? ttl : Duration.zero)
        })

        const remember = (revocation: Pick<Revocation, "tokenId" | "username" | "expiresAt">) => {
          revoked.set(revocation.tokenId, Number(revocation.expiresAt) * 1000)
          const devices = hub.connectionsOf(revocation.username)
          if (devices === undefined) return
          for (const connection of [...devices]) {
            if (connection.info.tokenId === revocation.tokenId) connection.close(CloseCodes.TokenExpired, "token revoked")
          }
        }

        const forgetExpired = (now: number) => {
          for (const [tokenId, until] of revoked) if (until <= now) revoked.delete(tokenId)
        }

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
            const tokenId = tokenIdOf(token, claims)
            if (revoked.has(tokenId)) {
              return yield* new AuthError({ reason: "Revoked", message: "access token was revoked" })
            }
            const lookup = Duration.isZero(ttl) ? logic.validateToken(token) : cache.get(token)
            const user = yield* lookup.pipe(
              // Outages and refusals are not remembered: only a valid answer is.
              Effect.tapError(() => cache.invalidate(token)),
              Effect.mapError((error) =>
                unavailable(error.code)
                  ? new AuthError({ reason: "Unavailable", message: error.message })
                  : new AuthError({ reason: "Invalid", message: error.message || "invalid access token" })
              )
            )
            return { username: user.username, expiresAt: claims?.expiresAt, tokenId }
          })

        const revoke = (token: string) =>
          Effect.gen(function*() {
            const now = yield* Clock.currentTimeMillis
            const claims = readClaims(token)
            const revocation = yield* logic.revokeToken(token).pipe(
              Effect.catchIf((error) => error.code === "unimplemented", () =>
                // A Logic without revocations (the Go one): this gateway refuses the token, others cannot know.
                Effect.as(
                  Effect.logWarning("Logic cannot store revocations; the token is refused by this gateway only"),
                  { tokenId: tokenIdOf(token, claims), username: claims?.sub ?? "", expiresAt: BigInt(Math.ceil((claims?.expiresAt ?? now + 86_400_000) / 1000)) }
                )),
              Effect.mapError((error) =>
                unavailable(error.code)
                  ? new AuthError({ reason: "Unavailable", message: error.message })
                  : new AuthError({ reason: "Invalid", message: error.message || "invalid access token" })
              )
            )
            forgetExpired(now)
            remember(revocation)
            yield* cache.invalidate(token)
          })

        if (options.revocationPoll !== undefined) {
          const interval = Duration.decode(options.revocationPoll)
          let cursor = 0n
          /** Reads every page after the cursor; false once Logic has said it keeps no revocations. */
          const catchUp: Effect.Effect<boolean> = Effect.gen(function*() {
            for (;;) {
              const page = yield* logic.listRevocations(cursor, REVOCATION_PAGE)
              for (const revocation of page.revocations) remember(revocation)
              if (page.nextCursor > cursor) cursor = page.nextCursor
              if (page.revocations.length < REVOCATION_PAGE) return true
            }
          }).pipe(
            Effect.catchAll((error) =>
              error.code === "unimplemented"
                ? Effect.as(Effect.logInfo("Logic keeps no revocation log; logouts are followed per gateway"), false)
                : Effect.as(Effect.logDebug("cannot read revocations yet", { code: error.code }), true)
            )
          )
          const follow: Effect.Effect<void> = Effect.flatMap(catchUp, (more) =>
            more
              ? Effect.zipRight(
                Effect.flatMap(Clock.currentTimeMillis, (now) => Effect.sync(() => forgetExpired(now))),
                Effect.zipRight(Effect.sleep(interval), follow)
              )
              : Effect.void)
          yield* Effect.forkScoped(follow)
        }

        return { authenticate, revoke }
      })
    )
}
