import Database from "better-sqlite3"
import { Clock, Data, Effect } from "effect"
import type { Scope } from "effect"
import * as fs from "node:fs"
import * as path from "node:path"
import { migrate } from "./Schema.js"

/** The embedded Logic could not start: bad options, unusable directory, database or secret. */
export class EmbeddedLogicError extends Data.TaggedError("EmbeddedLogicError")<{
  readonly reason: "Options" | "Directory" | "Database" | "InUse" | "Secret"
  readonly message: string
  readonly cause?: unknown
}> {}

const failure = (reason: EmbeddedLogicError["reason"], message: string) => (cause: unknown) =>
  new EmbeddedLogicError({ reason, message: `${message}: ${String(cause)}`, cause })

/**
 * One process per database file: a second one would take the same snowflake worker id and
 * write behind the first one's caches. The lock is SQLite's own (fcntl) on a companion file, held
 * in an exclusive transaction for the life of the scope: the OS releases it when the process
 * dies, however it dies, so it never goes stale.
 */
const lockFile = (databasePath: string): Effect.Effect<void, EmbeddedLogicError, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.try({
      try: () => {
        // 0600 like the database: it holds nothing, but nobody else has business opening it.
        fs.closeSync(fs.openSync(`${databasePath}.lock`, "a", 0o600))
        const lock = new Database(`${databasePath}.lock`)
        try {
          lock.pragma("busy_timeout = 0")
          lock.pragma("locking_mode = EXCLUSIVE")
          lock.exec("BEGIN EXCLUSIVE")
          return lock
        } catch (error) {
          lock.close()
          throw error
        }
      },
      catch: (cause) =>
        String(cause).includes("locked") || String(cause).includes("busy")
          ? new EmbeddedLogicError({
            reason: "InUse",
            message: `${databasePath} is in use by another process (its lock ${databasePath}.lock is held); one gateway or Logic per database file`,
            cause
          })
          : failure("Database", `cannot lock ${databasePath}`)(cause)
    }),
    (lock) => Effect.sync(() => lock.close())
  ).pipe(Effect.asVoid)

/**
 * Opens (creating it 0600, its directory 0700) and migrates the database. Commits never fsync on
 * the event loop: durability comes from WalSync, checkpoints from the Checkpointer's thread, and
 * the lock keeps other writers out, so the serving connection waits at most a moment for a lock.
 */
export const openDatabase = (databasePath: string): Effect.Effect<Database.Database, EmbeddedLogicError, Scope.Scope> =>
  Effect.gen(function*() {
    const inMemory = databasePath === ":memory:"
    if (!inMemory) {
      yield* Effect.try({
        try: () => {
          fs.mkdirSync(path.dirname(path.resolve(databasePath)), { recursive: true, mode: 0o700 })
          // Messages and password hashes are for this process only. SQLite gives the -wal and -shm
          // files the database file's mode, so creating it 0600 covers all three; older installs
          // are tightened too.
          fs.closeSync(fs.openSync(databasePath, "a", 0o600))
          for (const file of [databasePath, `${databasePath}-wal`, `${databasePath}-shm`]) {
            if (fs.existsSync(file)) fs.chmodSync(file, 0o600)
          }
        },
        catch: failure("Directory", `cannot prepare ${databasePath}`)
      })
      yield* lockFile(databasePath)
    }
    const db = yield* Effect.acquireRelease(
      Effect.try({ try: () => new Database(databasePath), catch: failure("Database", `cannot open ${databasePath}`) }),
      (db) => Effect.sync(() => db.close())
    )
    const nowMs = yield* Clock.currentTimeMillis
    const outcome = yield* Effect.try({
      try: () => {
        if (!inMemory) db.pragma("journal_mode = WAL")
        db.pragma("synchronous = NORMAL")
        if (!inMemory) db.pragma("wal_autocheckpoint = 0")
        db.pragma("foreign_keys = ON")
        // Nobody else writes this file; a lock still held means something is wrong, not busy.
        db.pragma("busy_timeout = 20")
        db.defaultSafeIntegers(true)
        return migrate(db, nowMs)
      },
      catch: failure("Database", `cannot prepare ${databasePath}`)
    })
    if (outcome._tag === "TooNew") {
      return yield* new EmbeddedLogicError({
        reason: "Database",
        message: `${databasePath} has schema version ${outcome.found}, newer than this build supports`
      })
    }
    return db
  })
