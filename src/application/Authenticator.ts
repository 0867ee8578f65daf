import { Clock, Context, Duration, Effect, Layer, Option } from "effect"
import { CloseCodes } from "../domain/Connection.js"
import { AuthError } from "../domain/Errors.js"
import type { LogicError } from "../domain/Errors.js"
import type { Revocation } from "../domain/Model.js"
import { readClaims, tokenIdOf } from "../domain/Token.js"
import { makeTurns } from "../domain/Turns.js"
import { ConnectionHub } from "./ConnectionHub.js"
import { Logic } from "./ports/Logic.js"
import { TokenVerifier } from "./ports/TokenVerifier.js"

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
   * The answer known here without asking Logic — a principal, or why not — and `undefined` when
   * Logic must be asked (`authenticate` does). Plain and synchronous: an upgrade costs no fiber.
   */
  readonly authenticateNow: (token: string | undefined) => Principal | AuthError | undefined
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
  /**
   * Tokens asked of Logic at once (only those nothing here can check: no shared key), and how many
   * more may wait for a turn; past both, a check is refused `Unavailable` at once. A flood of
   * requests with made-up tokens then costs Logic at most this many calls. Defaults 64 and 8,192,
   * as the WebSocket upgrades' own turn-taking (`ws_config.upgrade_concurrency` / `.upgrade_queue`),
   * so upgrades are never refused here before their own queue would refuse them.
   */
  readonly logicConcurrency?: number
  readonly logicQueue?: number
}

const REVOCATION_PAGE = 500

const unavailable = (code: string) => code === "unavailable" || code === "deadline_exceeded"

const expiredToken = new AuthError({ reason: "Expired", message: "access token expired" })
const busy = new AuthError({ reason: "Unavailable", message: "too many token checks at once, retry shortly" })
const revokedToken = new AuthError({ reason: "Revoked", message: "access token was revoked" })

/** token → username, through Logic.validateToken behind a short-lived cache; revocations followed. */
export class Authenticator extends Context.Tag("resonance/Authenticator")<Authenticator, AuthenticatorShape>() {
  static readonly layer = (options: AuthenticatorOptions = {}) =>
    Layer.scoped(
      Authenticator,
      Effect.gen(function*() {
        const logic = yield* Logic
        const hub = yield* ConnectionHub
        const verifier = Option.getOrUndefined(yield* Effect.serviceOption(TokenVerifier))
        const clock = yield* Effect.clock
        const ttlMs = Duration.toMillis(Duration.decode(options.cacheTtl ?? "30 seconds"))
        const capacity = options.cacheCapacity ?? 50_000
        const logicConcurrency = Math.max(1, options.logicConcurrency ?? 64)
        const logicQueue = Math.max(0, options.logicQueue ?? 8_192)
        const inTurn = yield* makeTurns(logicConcurrency, logicQueue)
        /** tokenId → unix ms until which the revocation matters. */
        const revoked = new Map<string, number>()
        /** Logic's positive answers: token → the principal, until when it may be reused (insertion order: oldest first). */
        const answers = new Map<string, { readonly principal: Principal; readonly until: number }>()
        const remember = (token: string, principal: Principal, now: number) => {
          if (ttlMs <= 0) return
          if (answers.size >= capacity) answers.delete(answers.keys().next().value!)
          answers.set(token, { principal, until: now + ttlMs })
        }

        const authenticateNow = (token: string | undefined): Principal | AuthError | undefined => {
          if (token === undefined || token === "") return new AuthError({ reason: "Missing", message: "missing access token" })
          const now = clock.unsafeCurrentTimeMillis()
          const known = answers.get(token)
          if (known !== undefined) {
            if (known.until > now && (known.principal.expiresAt === undefined || known.principal.expiresAt > now)) {
              return revoked.has(known.principal.tokenId) ? revokedToken : known.principal
            }
            answers.delete(token)
          }
          if (verifier !== undefined) {
            // The verifier reads the claims itself: one decode of the token, not two.
            const check = verifier.verify(token, now)
            if (check._tag === "Expired") return expiredToken
            if (check._tag === "Invalid") return new AuthError({ reason: "Invalid", message: "invalid access token" })
            if (revoked.has(check.tokenId)) return revokedToken
            // Not remembered: checking again costs microseconds, keeping every socket's token costs memory.
            return { username: check.username, expiresAt: check.expiresAt * 1000, tokenId: check.tokenId }
          }
          const claims = readClaims(token)
          if (claims?.expiresAt !== undefined && claims.expiresAt <= now) return expiredToken
          if (revoked.has(tokenIdOf(token, claims))) return revokedToken
          return undefined
        }

        const applyRevocation = (revocation: Pick<Revocation, "tokenId" | "username" | "expiresAt">) => {
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

        /** Logic's refusal of a token: unavailable while Logic cannot answer, invalid otherwise. */
        const authErrorOf = (error: LogicError): AuthError =>
          unavailable(error.code)
            ? new AuthError({ reason: "Unavailable", message: error.message })
            : new AuthError({ reason: "Invalid", message: error.message || "invalid access token" })

        const authenticate = (token: string | undefined): Effect.Effect<Principal, AuthError> =>
          Effect.suspend(() => {
            const now = authenticateNow(token)
            if (now === undefined) return askLogic(token!)
            return now instanceof AuthError ? Effect.fail(now) : Effect.succeed(now)
          })

        /**
         * Logic's word on a token nothing here can check, `logicConcurrency` at once and a bounded
         * queue behind them; only a valid answer is remembered.
         */
        const askLogic = (token: string): Effect.Effect<Principal, AuthError> =>
          inTurn(
            logic.validateToken(token).pipe(
              Effect.map((user): Principal => {
                const claims = readClaims(token)
                const principal = { username: user.username, expiresAt: claims?.expiresAt, tokenId: tokenIdOf(token, claims) }
                remember(token, principal, clock.unsafeCurrentTimeMillis())
                return principal
              }),
              Effect.mapError(authErrorOf)
            ),
            busy
          )

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
              Effect.mapError(authErrorOf)
            )
            forgetExpired(now)
            applyRevocation(revocation)
            answers.delete(token)
          })

        if (options.revocationPoll !== undefined) {
          const interval = Duration.decode(options.revocationPoll)
          let cursor = 0n
          /** Reads every page after the cursor; false once Logic has said it keeps no revocations. */
          const catchUp: Effect.Effect<boolean> = Effect.gen(function*() {
            for (;;) {
              const page = yield* logic.listRevocations(cursor, REVOCATION_PAGE)
              for (const revocation of page.revocations) applyRevocation(revocation)
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

        return { authenticate, authenticateNow, revoke }
      })
    )
}
