import { Effect } from "effect"
import type { Scope } from "effect"
import { CloseCodes } from "../../domain/Connection.js"
import type { LiveConnection } from "../ports/LiveConnection.js"

/** Connections by the second their token expires; one ticker closes them, not a timer each. */
export class ExpiryWheel {
  private readonly bySecond = new Map<number, Set<LiveConnection>>()

  constructor(private readonly onFirstEntry: () => void) {}

  get isEmpty(): boolean {
    return this.bySecond.size === 0
  }

  add(connection: LiveConnection, expiresAt: number): void {
    const second = Math.ceil(expiresAt / 1000)
    if (this.bySecond.size === 0) this.onFirstEntry()
    let due = this.bySecond.get(second)
    if (due === undefined) this.bySecond.set(second, (due = new Set()))
    due.add(connection)
  }

  remove(connection: LiveConnection, expiresAt: number): void {
    const second = Math.ceil(expiresAt / 1000)
    const due = this.bySecond.get(second)
    if (due === undefined) return
    due.delete(connection)
    if (due.size === 0) this.bySecond.delete(second)
  }

  expire(now: number): void {
    const second = Math.floor(now / 1000)
    for (const [at, due] of this.bySecond) {
      if (at > second) continue
      this.bySecond.delete(at)
      for (const connection of due) connection.close(CloseCodes.TokenExpired, "token expired")
    }
  }
}

/**
 * An expiry wheel with its ticker forked into the scope: once a second it closes the connections
 * whose token expired (4001); while no connection carries an expiry it sleeps on a latch.
 */
export const makeExpiryWheel: Effect.Effect<ExpiryWheel, never, Scope.Scope> = Effect.gen(function*() {
  const hasEntries = yield* Effect.makeLatch(false)
  const expiry = new ExpiryWheel(() => hasEntries.unsafeOpen())
  const clock = yield* Effect.clock
  const tick = Effect.zipRight(
    hasEntries.close,
    Effect.suspend(() =>
      expiry.isEmpty
        ? hasEntries.await
        : Effect.zipRight(Effect.sleep("1 second"), Effect.sync(() => expiry.expire(clock.unsafeCurrentTimeMillis())))
    )
  )
  yield* Effect.forkScoped(Effect.forever(tick))
  return expiry
})
