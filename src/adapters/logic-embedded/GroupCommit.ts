import type { Database, Transaction } from "better-sqlite3"
import { Effect } from "effect"

interface Job<I, O> {
  readonly input: I
  readonly resume: (outcome: { readonly ok: true; readonly value: O } | { readonly ok: false; readonly error: unknown }) => void
}

/**
 * Group commit: writes submitted in the same turn of the event loop share one transaction, so one
 * fsync makes a whole batch durable. `write` is a transaction function, which better-sqlite3 runs
 * as a savepoint inside the batch, so one failing write does not undo the others; no caller hears
 * back before the batch has committed.
 */
export const makeGroupCommit = <I, O>(
  db: Database,
  write: Transaction<(input: I) => O>,
  /** Runs after each batch commits and before its callers resume (the WAL flush). */
  afterCommit: (done: (error?: Error) => void) => void = (done) => done(),
  maxBatch = 256
) => {
  let queue: Array<Job<I, O>> = []
  let scheduled = false

  const commitAll = db.transaction((jobs: ReadonlyArray<Job<I, O>>) =>
    jobs.map((job) => {
      try {
        return { ok: true as const, value: write(job.input) }
      } catch (error) {
        return { ok: false as const, error }
      }
    })
  )

  const flush = () => {
    scheduled = false
    while (queue.length > 0) {
      const batch = queue.length <= maxBatch ? queue : queue.slice(0, maxBatch)
      queue = queue.length <= maxBatch ? [] : queue.slice(maxBatch)
      let outcomes: ReadonlyArray<{ readonly ok: true; readonly value: O } | { readonly ok: false; readonly error: unknown }>
      try {
        outcomes = commitAll.immediate(batch)
      } catch (error) {
        outcomes = batch.map(() => ({ ok: false as const, error }))
      }
      afterCommit((error) => {
        for (let i = 0; i < batch.length; i++) {
          batch[i]!.resume(error === undefined ? outcomes[i]! : { ok: false, error })
        }
      })
    }
  }

  /** Fails with the thrown error (a defect to map), succeeds once the batch is committed. */
  const submit = (input: I): Effect.Effect<O, unknown> =>
    Effect.async<O, unknown>((resume) => {
      queue.push({
        input,
        resume: (outcome) => resume(outcome.ok ? Effect.succeed(outcome.value) : Effect.fail(outcome.error))
      })
      if (!scheduled) {
        scheduled = true
        setImmediate(flush)
      }
    })

  return { submit }
}
