import type { Database } from "better-sqlite3"
import { Effect } from "effect"
import type { StatementCounters } from "./Statements.js"

type Outcome<O> = { readonly ok: true; readonly value: O } | { readonly ok: false; readonly error: unknown }

interface Job<O> {
  readonly work: () => O
  readonly resume: (outcome: Outcome<O>) => void
}

/**
 * Group commit: writes submitted in the same turn of the event loop share one transaction, so one
 * fsync makes a whole batch durable and BEGIN/COMMIT are paid once per batch. A job checks
 * everything it needs before it writes; one that throws rolls the whole batch back (a storage
 * failure, not a refusal), every caller of that batch hears of it, and `onRollback` lets caches
 * that followed the writes start over. No caller hears back before its batch has committed and
 * `afterCommit` (the WAL flush) is done.
 */
export const makeGroupCommit = (
  db: Database,
  counters: StatementCounters,
  options: {
    readonly afterCommit?: (done: (error?: Error) => void) => void
    readonly onRollback?: () => void
    readonly maxBatch?: number
  } = {}
) => {
  const afterCommit = options.afterCommit ?? ((done) => done())
  const maxBatch = options.maxBatch ?? 256
  let queue: Array<Job<unknown>> = []
  let scheduled = false
  const commitAll = db.transaction((jobs: ReadonlyArray<Job<unknown>>) => jobs.map((job) => job.work()))

  const flush = () => {
    scheduled = false
    while (queue.length > 0) {
      const jobs = queue.length <= maxBatch ? queue : queue.slice(0, maxBatch)
      queue = queue.length <= maxBatch ? [] : queue.slice(maxBatch)
      let outcomes: ReadonlyArray<Outcome<unknown>>
      try {
        outcomes = commitAll.immediate(jobs).map((value) => ({ ok: true as const, value }))
      } catch (error) {
        outcomes = jobs.map(() => ({ ok: false as const, error }))
        options.onRollback?.()
      }
      counters.transactions++
      afterCommit((error) => {
        for (let i = 0; i < jobs.length; i++) jobs[i]!.resume(error === undefined ? outcomes[i]! : { ok: false, error })
      })
    }
  }

  /** Runs `work` inside the next batch; fails with what it (or the batch) threw. */
  const submit = <O>(work: () => O): Effect.Effect<O, unknown> =>
    Effect.async<O, unknown>((resume) => {
      queue.push({
        work,
        resume: (outcome) => resume(outcome.ok ? Effect.succeed(outcome.value as O) : Effect.fail(outcome.error))
      })
      if (!scheduled) {
        scheduled = true
        setImmediate(flush)
      }
    })

  return { submit }
}

export type GroupCommit = ReturnType<typeof makeGroupCommit>
