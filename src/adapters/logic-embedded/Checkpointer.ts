import type Database from "better-sqlite3"
import { Effect, Runtime } from "effect"
import type { Scope } from "effect"
import { createRequire } from "node:module"
import { Worker } from "node:worker_threads"
import { guardedTick, scopedInterval } from "../platform/process/Interval.js"

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

/** The writes a checkpoint may hold back for its length (the group commit). */
export interface Writers {
  readonly hold: () => void
  readonly release: () => void
}

/** WAL frames after which a checkpoint holds the writes so that the log starts over (below). */
export const DEFAULT_RESTART_FRAMES = 16_384

/**
 * Caps the size the WAL file keeps (`journal_size_limit`) at a quarter above what the log reaches
 * before it starts over (`restartFrames`): about 84 MB with 4 KB pages. SQLite reuses the file
 * from its beginning when the log starts over, and does not shrink it unless told to, so a burst
 * the checkpoints could not keep up with (132 MB in the bench's saturation) left the file at that
 * size until the gateway stopped. With the cap, the first commit after the log starts over cuts
 * the file back. Under steady load the log stays below the cap, so no commit pays for blocks
 * given back and allocated again.
 */
export const limitWalFile = (db: Database.Database, restartFrames = DEFAULT_RESTART_FRAMES): number => {
  const pageSize = Number(db.pragma("page_size", { simple: true }))
  // A 32-byte file header, then a 24-byte header and a page per frame.
  const bytes = 32 + Math.ceil(restartFrames * 1.25) * (pageSize + 24)
  db.pragma(`journal_size_limit = ${bytes}`)
  return bytes
}

export interface CheckpointerOptions {
  /**
   * WAL frames after which a second checkpoint runs at once with the writes held. SQLite starts the
   * log over only when a write begins with every frame already copied into the database; a
   * checkpoint running beside commits every few milliseconds rarely ends in that state, so under
   * steady load the log grew for as long as the load lasted (154 MB over the bench's 20 s of e2e
   * levels). Default 16,384 (64 MB of 4 KB pages): a hold costs the writes a few milliseconds
   * (1,000 frames meant five holds a second at 2,000 msg/s, and a worse p99), so it is kept for
   * what would otherwise be unbounded.
   */
  readonly restartFrames?: number
  /** Longest a checkpoint holds the writes, whatever the worker does. */
  readonly maxHoldMs?: number
  /** How long each checkpoint took, from the request to the worker's answer (the metrics port's `walCheckpoint`). */
  readonly checkpointed?: (seconds: number) => void
}

/**
 * Checkpoints the WAL from a worker thread (the main connection runs with
 * `wal_autocheckpoint = 0`), so the WAL neither grows without bound nor blocks commits: checkpoints
 * run beside the commits, and once the log has `restartFrames` frames a second one holds the
 * writes until it is done, so that the next commit starts the log over.
 */
export const makeCheckpointer = (
  databasePath: string,
  writers?: Writers,
  options: CheckpointerOptions = {}
): Effect.Effect<Checkpointer, never, Scope.Scope> =>
  Effect.gen(function*() {
    const restartFrames = options.restartFrames ?? DEFAULT_RESTART_FRAMES
    const maxHoldMs = options.maxHoldMs ?? 50
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
    let holdTimer: ReturnType<typeof setTimeout> | undefined
    const release = () => {
      if (holdTimer === undefined) return
      clearTimeout(holdTimer)
      holdTimer = undefined
      writers?.release()
    }
    yield* Effect.addFinalizer(() => Effect.sync(release))
    const runFork = Runtime.runFork(yield* Effect.runtime<never>())
    const logFailure = (error: string) =>
      runFork(Effect.logWarning("embedded logic: WAL checkpoint failed").pipe(Effect.annotateLogs({ error })))
    /** Whether the running checkpoint is the one that holds the writes. */
    let restarting = false
    let startedAt = 0
    const start = (holding: boolean) => {
      wanted = false
      running = true
      startedAt = performance.now()
      restarting = holding
      if (holding && writers !== undefined) {
        writers.hold()
        holdTimer = setTimeout(release, maxHoldMs)
        holdTimer.unref()
      }
      worker.postMessage("checkpoint")
    }
    worker.on("message", (result: { ok: boolean; error?: string; log?: number }) => {
      running = false
      options.checkpointed?.((performance.now() - startedAt) / 1000)
      const held = restarting
      restarting = false
      release()
      if (!result.ok) logFailure(result.error ?? "unknown")
      // A long log: at once a second checkpoint with the writes held. It copies only what was
      // committed while this one ran, so the writes wait for little more than a database flush.
      else if (!held && writers !== undefined && (result.log ?? 0) >= restartFrames) return start(true)
      if (wanted) start(false)
    })
    worker.on("error", (error) => {
      release()
      logFailure(error.message)
    })
    const request = () => {
      if (running) wanted = true
      else start(false)
    }
    return { request }
  })

/** What the group commit tells the schedule. */
export interface CheckpointSchedule {
  /** After each commit: when the short interval has stopped, it starts again at once. */
  readonly wake: () => void
}

/**
 * Asks for a checkpoint every `intervalMs` while write transactions commit, and once a second
 * otherwise. Small, frequent checkpoints keep each flush of the database file short: one a second
 * wrote every page a second of chats had touched (a page per active session in each index) and
 * flushed them at once, and every WAL flush queued behind it, holding up acks for 10-40 ms.
 *
 * The short interval runs only while commits come: after a second without one it stops, and the
 * next commit's `wake` starts it again. An idle gateway woke 50 times a second for it before; now
 * the once-a-second timer is all that is left. That one also covers the writes that do not go
 * through the group commit (accounts, new sessions) and, at once, a WAL left by a crash.
 */
export const scheduleCheckpoints = (
  checkpointer: Checkpointer,
  counters: { readonly transactions: number },
  intervalMs: number
): Effect.Effect<CheckpointSchedule, never, Scope.Scope> =>
  Effect.gen(function*() {
    const ticksPerSecond = Math.max(1, Math.round(1_000 / intervalMs))
    let committed = counters.transactions
    let quiet = 0
    let short: ReturnType<typeof setInterval> | undefined
    const stop = () => {
      if (short !== undefined) clearInterval(short)
      short = undefined
    }
    yield* Effect.addFinalizer(() => Effect.sync(stop))
    const shortTick = yield* guardedTick("WAL checkpoint tick", () => {
      if (counters.transactions !== committed) {
        committed = counters.transactions
        quiet = 0
        checkpointer.request()
      } else if (++quiet >= ticksPerSecond) {
        stop()
        checkpointer.request()
      }
    })
    const wake = () => {
      if (short !== undefined) return
      quiet = 0
      short = setInterval(shortTick, intervalMs).unref()
    }
    yield* scopedInterval("WAL checkpoint tick", 1_000, () => {
      if (short !== undefined) return
      // Commits whose wake was missed still bring the short interval back.
      if (counters.transactions !== committed) wake()
      checkpointer.request()
    })
    return { wake }
  })
