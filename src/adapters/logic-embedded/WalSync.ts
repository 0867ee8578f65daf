import type Database from "better-sqlite3"
import { Effect } from "effect"
import type { Scope } from "effect"
import * as fs from "node:fs"

/**
 * Makes committed WAL frames durable without blocking the event loop: SQLite does not sync inside a
 * commit (`synchronous = NORMAL`, or OFF with `syncThroughWalSync`) and this flushes the `-wal`
 * file with an fdatasync on libuv's thread pool before a write is acknowledged.
 */
export interface WalSync {
  /** Calls `done` once everything committed before the call is on disk. */
  readonly flush: (done: (error?: Error) => void) => void
  readonly sync: Effect.Effect<void, Error>
}

export const noWalSync: WalSync = { flush: (done) => done(), sync: Effect.void }

/**
 * One fdatasync at a time. A flush asked for while one runs waits for the next, which starts
 * when the running one ends and covers every commit made meanwhile: the running one may have
 * started before their frames were written, so it cannot answer for them. When the disk stalls
 * (80 ms on the bench's VM, with a commit every 2 ms) the commits of the stall then share one
 * flush instead of queueing forty, and the thread pool keeps three of its four threads for
 * everything else (password hashes, file reads).
 */
export const makeWalSync = (
  databasePath: string,
  options: {
    /** How long each fdatasync took (the metrics port's `walFlush`). */
    readonly flushed?: (seconds: number) => void
    readonly fdatasync?: (fd: number, callback: (error: NodeJS.ErrnoException | null) => void) => void
  } = {}
): Effect.Effect<WalSync, never, Scope.Scope> =>
  Effect.gen(function*() {
    const walPath = `${databasePath}-wal`
    let fd: number | undefined
    yield* Effect.addFinalizer(() =>
      Effect.sync(() => {
        if (fd !== undefined) fs.closeSync(fd)
        fd = undefined
      })
    )
    const fdatasync = options.fdatasync ?? fs.fdatasync
    const flushed = options.flushed ?? (() => {})
    let running = false
    /** Callers for the next fdatasync, made after the running one ends. */
    let next: Array<(error?: Error) => void> = []
    const start = (file: number) => {
      const waiting = next
      next = []
      running = true
      const startedAt = performance.now()
      fdatasync(file, (error) => {
        running = false
        flushed((performance.now() - startedAt) / 1000)
        // The next one first: these callers' answers may take a while (acks to write).
        if (next.length > 0) {
          if (fd !== undefined) start(fd)
          else for (const late of next.splice(0)) late(new Error("the WAL was closed before it was flushed"))
        }
        for (const done of waiting) done(error ?? undefined)
      })
    }
    const flush = (done: (error?: Error) => void) => {
      if (fd === undefined) {
        try {
          fd = fs.openSync(walPath, "r+")
        } catch (error) {
          // No WAL yet means nothing was committed through it.
          if ((error as NodeJS.ErrnoException).code === "ENOENT") return done()
          return done(error as Error)
        }
      }
      next.push(done)
      if (!running) start(fd)
    }
    const sync = Effect.async<void, Error>((resume) =>
      flush((error) => resume(error === undefined ? Effect.void : Effect.fail(error)))
    )
    return { flush, sync }
  })

/**
 * With a WalSync flushing the WAL after every commit, the serving connection syncs nothing itself
 * (`synchronous = OFF`). What NORMAL still synced there was the WAL header each time the log
 * restarts after a checkpoint: under chat load about 40 blocking fsyncs a second on the event
 * loop, each one waiting for the disk (and, on a VM, an exit to the host).
 *
 * Nothing acknowledged depends on that sync. Every ack waits for an fdatasync of the WAL, which
 * makes the new header durable with the frames after it. The header sync exists so that old
 * frames are never replayed over a database that already holds newer pages; here only the
 * Checkpointer's connection writes pages into the database, and it syncs the WAL (header
 * included) before it does. The setting is put back before the connection closes, because the
 * last connection to close checkpoints the WAL into the database and deletes it.
 */
export const syncThroughWalSync = (db: Database.Database): Effect.Effect<void, never, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.sync(() => void db.pragma("synchronous = OFF")),
    () => Effect.sync(() => void db.pragma("synchronous = NORMAL"))
  )
