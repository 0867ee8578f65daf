import { Clock, Data, Effect } from "effect"
import { clientKeyOf, makeKeyedRateLimiter } from "../domain/RateLimit.js"

export interface LoginGuardOptions {
  /** Failed logins of one username from one address within the window, past which that pair is refused; 0 = no limit. */
  readonly failuresPerUserAndAddress: number
  readonly failureWindowSeconds: number
}

/** A login refused before any password was checked; `retryAfter` in whole seconds. */
export class LoginRefused extends Data.TaggedError("LoginRefused")<{
  readonly reason: "Failures"
  readonly message: string
  readonly retryAfter: number
}> {}

export interface LoginGuard {
  /**
   * Runs `attempt`, a login of `username` for the client at `address`, unless the pair has spent
   * its failures. Attempts on one username run one at a time: a brute force from many addresses is
   * slowed to the pace of the password hash, while the owner's attempt waits its turn and is never
   * locked out. A failure that `isWrongPassword` counts against the pair; a success forgets its failures.
   */
  readonly guard: <A, E>(
    username: string,
    address: string,
    attempt: Effect.Effect<A, E>,
    isWrongPassword: (error: E) => boolean
  ) => Effect.Effect<A, E | LoginRefused>
}

interface Turn {
  readonly semaphore: Effect.Semaphore
  users: number
}

/**
 * The login policy against guessing. Failures are counted per (username, address), so one address
 * guessing a password cannot lock the owner out from another. (The few places per address for a
 * password hash are the HTTP adapter's front step: they are taken before any Effect runs.)
 */
export const makeLoginGuard = (options: LoginGuardOptions): LoginGuard => {
  const failures = options.failuresPerUserAndAddress > 0
    ? makeKeyedRateLimiter({
      ratePerSecond: options.failuresPerUserAndAddress / Math.max(1, options.failureWindowSeconds),
      burst: options.failuresPerUserAndAddress
    })
    : undefined
  const turns = new Map<string, Turn>()

  /** One attempt at a time per username; the entry goes once nobody waits. */
  const oneAtATime = <A, E>(username: string, attempt: Effect.Effect<A, E>) =>
    Effect.suspend(() => {
      let turn = turns.get(username)
      if (turn === undefined) {
        turn = { semaphore: Effect.unsafeMakeSemaphore(1), users: 0 }
        turns.set(username, turn)
      }
      const held = turn
      held.users++
      return held.semaphore.withPermits(1)(attempt).pipe(
        Effect.ensuring(Effect.sync(() => {
          if (--held.users === 0) turns.delete(username)
        }))
      )
    })

  const guard = <A, E>(
    username: string,
    address: string,
    attempt: Effect.Effect<A, E>,
    isWrongPassword: (error: E) => boolean
  ): Effect.Effect<A, E | LoginRefused> =>
    Effect.flatMap(Clock.currentTimeMillis, (now): Effect.Effect<A, E | LoginRefused> => {
      const pair = `${username}\u0000${clientKeyOf(address)}`
      if (failures !== undefined) {
        const retryAfter = failures.retryAfter(pair, now)
        if (retryAfter > 0) {
          return Effect.fail(new LoginRefused({ reason: "Failures", message: "too many failed logins for this user from this address", retryAfter }))
        }
      }
      const counted = failures === undefined ? attempt : attempt.pipe(
        Effect.tapBoth({
          onFailure: (error) =>
            isWrongPassword(error)
              ? Effect.flatMap(Clock.currentTimeMillis, (at) => Effect.sync(() => failures.take(pair, at)))
              : Effect.void,
          onSuccess: () => Effect.sync(() => failures.reset(pair))
        })
      )
      return oneAtATime(username, counted)
    })

  return { guard }
}
