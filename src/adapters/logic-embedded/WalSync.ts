import { Effect } from "effect"
import type { Scope } from "effect"
import * as fs from "node:fs"

/**
 * Makes committed WAL frames durable without blocking the event loop: SQLite runs with
 * `synchronous = NORMAL` (no fsync inside a commit) and this flushes the `-wal` file with an
 * fdatasync on libuv's thread pool before a write is acknowledged.
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
