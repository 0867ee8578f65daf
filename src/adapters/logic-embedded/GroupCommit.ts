import type { Database } from "better-sqlite3"
import { Effect } from "effect"
import type { StatementCounters } from "./Statements.js"

export type Outcome<O> = { readonly ok: true; readonly value: O } | { readonly ok: false; readonly error: unknown }

interface Job<O> {
  readonly work: () => O
  readonly resume: (outcome: Outcome<O>) => void
}

/**
 * Group commit: a write that comes when the last commit is older than `minIntervalMs` commits at
 * once, in the caller's turn (the Dispatcher already hands over a turn's chats as one job); writes
 * that come sooner wait for the interval and share one transaction, so under load one fsync makes
 * a whole batch durable and BEGIN/COMMIT are paid once per batch. A job checks everything it needs
 * before it writes; one that throws rolls the whole batch back (a storage failure, not a
 * refusal), every caller of that batch hears of it, and `onRollback` lets caches that followed the
 * writes start over. No caller hears back before its batch has committed and `afterCommit` (the
 * WAL flush) is done.
 */
export const makeGroupCommit = (
  db: Database,
  counters: StatementCounters,
  options: {
    readonly afterCommit?: (done: (error?: Error) => void) => void
    /** After each transaction, before its flush (the checkpoint schedule wakes on it). */
    readonly onCommit?: () => void
    readonly onRollback?: () => void
    readonly maxBatch?: number
    /**
     * Least time between two commits. A commit costs the same for one message as for fifty (it
     * writes the pages the batch touched), so under load waiting this long for company is cheaper
     * than committing alone; when the last commit is older than this the next one runs at once.
     */
    readonly minIntervalMs?: number
  } = {}
) => {
  const afterCommit = options.afterCommit ?? ((done) => done())
  const maxBatch = options.maxBatch ?? 256
  const minIntervalMs = options.minIntervalMs ?? 0
  let queue: Array<Job<unknown>> = []
  let scheduled = false
  let held = false
  let lastCommitAt = -Infinity
  const commitAll = db.transaction((jobs: ReadonlyArray<Job<unknown>>) => jobs.map((job) => job.work()))

  const flush = () => {
    scheduled = false
    if (held) return
    lastCommitAt = performance.now()
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
      options.onCommit?.()
      afterCommit((error) => {
        for (let i = 0; i < jobs.length; i++) jobs[i]!.resume(error === undefined ? outcomes[i]! : { ok: false, error })
      })
    }
  }

  /**
   * Runs `work` inside the next batch and calls `resume` with what it returned (or what it, or
   * the batch, threw) once the batch is durable. Plain: the in-process chat path uses it per batch
   * of chats, with no fiber.
   */
  const enqueue = <O>(work: () => O, resume: (outcome: Outcome<O>) => void): void => {
    queue.push({ work, resume: resume as (outcome: Outcome<unknown>) => void })
    if (scheduled) return
    const wait = lastCommitAt + minIntervalMs - performance.now()
    if (wait <= 0) {
      flush()
    } else {
      scheduled = true
      setTimeout(flush, wait)
    }
  }

  /**
   * Stops committing until `release`: writes wait in the queue. The Checkpointer holds the writes
   * for the length of one checkpoint so that the WAL is wholly copied when the next commit
   * begins, which lets that commit start the log over from its beginning.
   */
  const hold = (): void => {
    held = true
  }

  const release = (): void => {
    if (!held) return
    held = false
    if (queue.length > 0 && !scheduled) flush()
  }

  /** `enqueue` as an Effect; what it (or the batch) threw goes to `onError`. */
  const submit = <O, E>(work: () => O, onError: (error: unknown) => Effect.Effect<never, E>): Effect.Effect<O, E> =>
    Effect.async<O, E>((resume) => {
      enqueue(work, (outcome) => resume(outcome.ok ? Effect.succeed(outcome.value) : onError(outcome.error)))
    })

  return { enqueue, submit, hold, release }
}

export type GroupCommit = ReturnType<typeof makeGroupCommit>
