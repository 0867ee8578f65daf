import { Effect, Runtime } from "effect"
import type { Scope } from "effect"
import { createRequire } from "node:module"
import { Worker } from "node:worker_threads"
import { scopedInterval } from "../platform/process/Interval.js"

// Runs in a worker thread with its own connection: a checkpoint copies WAL pages into the
// database and fsyncs it, which must not stall the event loop that serves sockets.
const workerSource = `
const { parentPort, workerData } = require("node:worker_threads")
const Database = require(workerData.driver)
const db = new Database(workerData.databasePath)
db.pragma("busy_timeout = 1000")
// Syncs the WAL before it copies pages into the database, and the database after: the serving
// connection relies on it (WalSync.ts, syncThroughWalSync).
db.pragma("synchronous = NORMAL")
parentPort.on("message", (message) => {
  if (message === "close") { db.close(); parentPort.close(); return }
  try {
    const [result] = db.pragma("wal_checkpoint(PASSIVE)")
    parentPort.postMessage({ ok: true, log: result.log, checkpointed: result.checkpointed })
  } catch (error) {
    parentPort.postMessage({ ok: false, error: String(error) })
  }
})
`

export interface Checkpointer {
  /** Asks for a checkpoint; at most one runs at a time, requests meanwhile fold into one. */
  readonly request: () => void
}

/**
 * Checkpoints the WAL from a worker thread (the main connection runs with
 * `wal_autocheckpoint = 0`), so the WAL neither grows without bound nor blocks commits.
 */
export const makeCheckpointer = (databasePath: string): Effect.Effect<Checkpointer, never, Scope.Scope> =>
  Effect.gen(function*() {
    const driver = createRequire(import.meta.url).resolve("better-sqlite3")
    const worker = yield* Effect.acquireRelease(
      Effect.sync(() => new Worker(workerSource, { eval: true, workerData: { driver, databasePath } })),
      (worker) =>
        Effect.async<void>((resume) => {
          worker.once("exit", () => resume(Effect.void))
          worker.postMessage("close")
          setTimeout(() => void worker.terminate(), 2_000).unref()
        })
    )
    let running = false
    let wanted = false
    const runFork = Runtime.runFork(yield* Effect.runtime<never>())
    const logFailure = (error: string) =>
      runFork(Effect.logWarning("embedded logic: WAL checkpoint failed").pipe(Effect.annotateLogs({ error })))
    worker.on("message", (result: { ok: boolean; error?: string }) => {
      running = false
      if (!result.ok) logFailure(result.error ?? "unknown")
      if (wanted) request()
    })
    worker.on("error", (error) => logFailure(error.message))
    const request = () => {
      if (running) {
        wanted = true
        return
      }
      wanted = false
      running = true
      worker.postMessage("checkpoint")
    }
    return { request }
  })

/**
 * Asks for a checkpoint every `intervalMs` while write transactions commit, and once a second
 * otherwise. Small, frequent checkpoints keep each flush of the database file short: one a second
 * wrote every page a second of chats had touched (a page per active session in each index) and
 * flushed them at once, and every WAL flush queued behind it, holding up acks for 10-40 ms.
 */
export const scheduleCheckpoints = (
  checkpointer: Checkpointer,
  counters: { readonly transactions: number },
  intervalMs: number
): Effect.Effect<void, never, Scope.Scope> => {
  const ticksPerSecond = Math.max(1, Math.round(1_000 / intervalMs))
  let committed = -1
  let ticks = 0
  const tick = () => {
    ticks++
    if (counters.transactions === committed && ticks < ticksPerSecond) return
    committed = counters.transactions
    ticks = 0
    checkpointer.request()
  }
  // The first at once (a WAL left by a crash), then 50 wake-ups a second.
  return scopedInterval("WAL checkpoint tick", intervalMs, tick)
}
