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

export const makeWalSync = (databasePath: string): Effect.Effect<WalSync, never, Scope.Scope> =>
  Effect.gen(function*() {
    const walPath = `${databasePath}-wal`
    let fd: number | undefined
    yield* Effect.addFinalizer(() =>
      Effect.sync(() => {
        if (fd !== undefined) fs.closeSync(fd)
        fd = undefined
      })
    )
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
      fs.fdatasync(fd, (error) => done(error ?? undefined))
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
