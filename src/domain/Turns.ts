import { Effect } from "effect"

/** Runs an effect in its turn, or fails with `busy` at once when the line is full. */
export type Turns = <A, E, R, B>(effect: Effect.Effect<A, E, R>, busy: B) => Effect.Effect<A, E | B, R>

/**
 * Turn-taking with a bounded line: `concurrency` effects run at once and `queue` more wait for a
 * turn; past both, the next one fails with its `busy` at once, so a flood costs refusals instead
 * of a line that grows without bound. (Password hashes, token checks asked of Logic.)
 */
export const makeTurns = (concurrency: number, queue: number): Effect.Effect<Turns> =>
  Effect.map(Effect.makeSemaphore(concurrency), (permits) => {
    /** Running or waiting. */
    let admitted = 0
    const release = Effect.sync(() => {
      admitted--
    })
    return <A, E, R, B>(effect: Effect.Effect<A, E, R>, busy: B): Effect.Effect<A, E | B, R> =>
      Effect.suspend((): Effect.Effect<A, E | B, R> => {
        if (admitted >= concurrency + queue) return Effect.fail(busy)
        admitted++
        return Effect.ensuring(permits.withPermits(1)(effect), release)
      })
  })
