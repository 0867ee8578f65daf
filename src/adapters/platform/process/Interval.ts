import { Cause, Effect, Runtime } from "effect"
import type { Scope } from "effect"

/**
 * `tick` for a plain timer: what it throws is logged (`<what> failed`) instead of escaping into
 * the timer, so the next tick still runs.
 */
export const guardedTick = (what: string, tick: () => void): Effect.Effect<() => void> =>
  Effect.map(Effect.runtime<never>(), (runtime) => {
    const runFork = Runtime.runFork(runtime)
    return () => {
      try {
        tick()
      } catch (error) {
        runFork(Effect.logError(`${what} failed`, Cause.die(error)))
      }
    }
  })

/**
 * Runs `tick` at once, then every `intervalMs` for the life of the scope, on a plain timer.
 * Housekeeping that wakes tens of times a second stays out of fibers: on the bench's VM a
 * `Schedule.spaced` repeat cost ~700 µs of CPU per wake-up against ~75 µs for `setInterval`, and
 * the checkpoint tick and the heartbeat alone kept an idle gateway at 4 % of a core
 * (bench/README.md, "Ticks"). The timer is unref'd (the listeners keep the process alive); a tick
 * that throws, the first included, is logged, and the next one runs.
 */
export const scopedInterval = (
  what: string,
  intervalMs: number,
  tick: () => void
): Effect.Effect<void, never, Scope.Scope> =>
  Effect.gen(function*() {
    const guarded = yield* guardedTick(what, tick)
    guarded()
    yield* Effect.acquireRelease(
      Effect.sync(() => setInterval(guarded, intervalMs).unref()),
      (timer) => Effect.sync(() => clearInterval(timer))
    )
  })
