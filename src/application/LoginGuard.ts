import { Clock, Data, Effect } from "effect"
import { clientKeyOf, makeKeyedRateLimiter } from "../domain/RateLimit.js"

export interface LoginGuardOptions {
  /** Failed logins of one username from one address within the window, past which that pair is refused; 0 = no limit. */
  readonly failuresPerUserAndAddress: number
  readonly failureWindowSeconds: number
  /** Logins and registrations in flight at once from one address (each costs a password hash); 0 = no limit. */
  readonly inFlightPerAddress: number
}

/** A login refused before any password was checked; `retryAfter` in whole seconds. */
export class LoginRefused extends Data.TaggedError("LoginRefused")<{
  readonly reason: "Failures"
  readonly message: string
  readonly retryAfter: number
}> {}

export interface LoginGuard {
  /**
   * Takes one of the address's places for a login or registration in flight, before anything
   * else is spent on the request: false when it has none left (refuse at once). Plain.
   */
  readonly enter: (ip: string) => boolean
  /** Gives the place back once the request is answered. */
  readonly leave: (ip: string) => void
  /**
   * Runs `attempt` (a login of `username`, or a registration when `username` is undefined) for the
   * client at `ip` unless the pair has spent its failures.
   * Attempts on one username run one at a time: a brute force from many addresses is slowed to
   * the pace of the password hash, while the owner's attempt waits its turn and is never locked out.
   * A failure that `isWrongPassword` counts against the pair; a success forgets its failures.
   */
  readonly guard: <A, E>(
    username: string | undefined,
    ip: string,
    attempt: Effect.Effect<A, E>,
    isWrongPassword: (error: E) => boolean
  ) => Effect.Effect<A, E | LoginRefused>
}

interface Turn {
  readonly semaphore: Effect.Semaphore
  users: number
}

/**
 * The login policy against guessing and floods. Failures are counted per (username, address), so
 * one address guessing a password cannot lock the owner out from another; the hash queue is kept
 * fair by allowing each address only a few attempts in flight.
 */
export const makeLoginGuard = (options: LoginGuardOptions): LoginGuard => {
  const failures = options.failuresPerUserAndAddress > 0
    ? makeKeyedRateLimiter({
      ratePerSecond: options.failuresPerUserAndAddress / Math.max(1, options.failureWindowSeconds),
      burst: options.failuresPerUserAndAddress
    })
    : undefined
  const inFlight = new Map<string, number>()
  const turns = new Map<string, Turn>()

  const release = (address: string) => {
    const count = (inFlight.get(address) ?? 1) - 1
    if (count <= 0) inFlight.delete(address)
    else inFlight.set(address, count)
  }

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
    username: string | undefined,
    ip: string,
    attempt: Effect.Effect<A, E>,
    isWrongPassword: (error: E) => boolean
  ): Effect.Effect<A, E | LoginRefused> =>
    Effect.flatMap(Clock.currentTimeMillis, (now): Effect.Effect<A, E | LoginRefused> => {
      const address = clientKeyOf(ip)
      const pair = username === undefined ? undefined : `${username}\u0000${address}`
      if (failures !== undefined && pair !== undefined) {
        const retryAfter = failures.retryAfter(pair, now)
        if (retryAfter > 0) {
          return Effect.fail(new LoginRefused({ reason: "Failures", message: "too many failed logins for this user from this address", retryAfter }))
        }
      }
      const counted = attempt.pipe(
        Effect.tapBoth({
          onFailure: (error) =>
            failures !== undefined && pair !== undefined && isWrongPassword(error)
              ? Effect.flatMap(Clock.currentTimeMillis, (at) => Effect.sync(() => failures.take(pair, at)))
              : Effect.void,
          onSuccess: () => Effect.sync(() => pair !== undefined && failures?.reset(pair))
        })
      )
      return username === undefined ? counted : oneAtATime(username, counted)
    })

  const enter = (ip: string): boolean => {
    if (options.inFlightPerAddress <= 0) return true
    const address = clientKeyOf(ip)
    const running = inFlight.get(address) ?? 0
    if (running >= options.inFlightPerAddress) return false
    inFlight.set(address, running + 1)
    return true
  }

  return { enter, leave: (ip) => options.inFlightPerAddress > 0 && release(clientKeyOf(ip)), guard }
}
