import { describe, expect, it, vi } from "@effect/vitest"
import Database from "better-sqlite3"
import { Effect, Exit, Fiber } from "effect"
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import { makeGroupCommit } from "../../src/adapters/logic-embedded/GroupCommit.js"
import { makeCounters } from "../../src/adapters/logic-embedded/Statements.js"
import { makeWalSync, syncThroughWalSync } from "../../src/adapters/logic-embedded/WalSync.js"
import { limitWalFile, makeCheckpointer, scheduleCheckpoints } from "../../src/adapters/logic-embedded/Checkpointer.js"

const openDb = () => {
  const dir = Fs.mkdtempSync(Path.join(Os.tmpdir(), "resonance-group-commit-"))
  const db = new Database(Path.join(dir, "db.sqlite"))
  db.pragma("journal_mode = WAL")
  db.exec("CREATE TABLE t (v TEXT NOT NULL UNIQUE)")
  return { db, cleanup: () => (db.close(), Fs.rmSync(dir, { recursive: true, force: true })) }
}

/** A WAL database file that only the caller checkpoints, removed with the scope. */
const scopedWalDb = (table: string) =>
  Effect.gen(function*() {
    const dir = Fs.mkdtempSync(Path.join(Os.tmpdir(), "resonance-ckpt-"))
    const file = Path.join(dir, "db.sqlite")
    const db = new Database(file)
    yield* Effect.addFinalizer(() => Effect.sync(() => (db.close(), Fs.rmSync(dir, { recursive: true, force: true }))))
    db.pragma("journal_mode = WAL")
    db.pragma("wal_autocheckpoint = 0")
    db.exec(`CREATE TABLE t (${table})`)
    return { db, file }
  })

const count = (db: Database.Database) => (db.prepare("SELECT count(*) AS n FROM t").get() as { n: number }).n

describe("group commit", () => {
  it.live("a write after a quiet interval commits at once, in the caller's turn; writes within the interval share one transaction", () => {
    const { db, cleanup } = openDb()
    const insert = db.prepare("INSERT INTO t (v) VALUES (?)")
    const counters = makeCounters()
    let told = 0
    const commit = makeGroupCommit(db, counters, { minIntervalMs: 50, onCommit: () => void told++ })
    return Effect.gen(function*() {
      const first = Effect.runFork(commit.submit(() => (insert.run("a"), "A"), Effect.fail))
      // No deferral: the row is committed before the submitting code has gone on.
      expect(count(db)).toBe(1)
      expect(told).toBe(1)
      expect(yield* Fiber.join(first)).toBe("A")
      const results = yield* Effect.all(
        ["b", "c", "d"].map((v) => commit.submit(() => (insert.run(v), v.toUpperCase()), Effect.fail)),
        { concurrency: "unbounded" }
      )
      expect(results).toEqual(["B", "C", "D"])
      expect(counters.transactions).toBe(2)
      expect(told).toBe(2)
      const rows = db.prepare("SELECT v FROM t ORDER BY v").all() as Array<{ v: string }>
      expect(rows.map((r) => r.v)).toEqual(["a", "b", "c", "d"])
    }).pipe(Effect.ensuring(Effect.sync(cleanup)))
  })

  it.live("a job that throws rolls its whole batch back, every caller of it fails, and onRollback is told", () => {
    const { db, cleanup } = openDb()
    const insert = db.prepare("INSERT INTO t (v) VALUES (?)")
    let rollbacks = 0
    const commit = makeGroupCommit(db, makeCounters(), { onRollback: () => rollbacks++, minIntervalMs: 50 })
    return Effect.gen(function*() {
      yield* commit.submit(() => insert.run("w"), Effect.fail)
      // Within the interval of that commit: these three wait and go together.
      const results = yield* Effect.all(
        ["a", "a", "c"].map((v) => Effect.exit(commit.submit(() => insert.run(v), Effect.fail))),
        { concurrency: "unbounded" }
      )
      expect(results.map(Exit.isFailure)).toEqual([true, true, true])
      expect(rollbacks).toBe(1)
      expect(count(db)).toBe(1)
      // The next batch is unaffected.
      yield* commit.submit(() => insert.run("d"), Effect.fail)
      expect((db.prepare("SELECT v FROM t ORDER BY v").all() as Array<{ v: string }>).map((r) => r.v)).toEqual(["d", "w"])
    }).pipe(Effect.ensuring(Effect.sync(cleanup)))
  })

  it.live("a caller hears back only after the commit and its flush, and batches are bounded", () => {
    const { db, cleanup } = openDb()
    const insert = db.prepare("INSERT INTO t (v) VALUES (?)")
    let flushes = 0
    const commit = makeGroupCommit(db, makeCounters(), {
      afterCommit: (done) => setTimeout(() => (flushes++, done()), 5),
      maxBatch: 3,
      minIntervalMs: 50
    })
    return Effect.gen(function*() {
      yield* commit.submit(() => insert.run("first"), Effect.fail)
      expect(flushes).toBe(1)
      const results = yield* Effect.all(
        Array.from({ length: 10 }, (_, i) =>
          commit.submit(() => insert.run(`v${i}`).changes, Effect.fail).pipe(
            Effect.map(() => (db.prepare("SELECT count(*) AS n FROM t WHERE v = ?").get(`v${i}`) as { n: number }).n)
          )),
        { concurrency: "unbounded" }
      )
      expect(results).toEqual(Array(10).fill(1))
      expect(count(db)).toBe(11)
      // ten writes within the interval, three to a batch: four more commits, each flushed before its callers resume
      expect(flushes).toBe(5)
    }).pipe(Effect.ensuring(Effect.sync(cleanup)))
  })

  it.live("while held, writes wait in the queue; release commits them in one transaction", () => {
    const { db, cleanup } = openDb()
    const insert = db.prepare("INSERT INTO t (v) VALUES (?)")
    const counters = makeCounters()
    const commit = makeGroupCommit(db, counters, { minIntervalMs: 0 })
    return Effect.gen(function*() {
      commit.hold()
      const resumed: Array<string> = []
      for (const v of ["a", "b", "c"]) commit.enqueue(() => insert.run(v), (outcome) => void resumed.push(outcome.ok ? v : "error"))
      yield* Effect.sleep("20 millis")
      expect(count(db)).toBe(0)
      expect(resumed).toEqual([])
      commit.release()
      expect(count(db)).toBe(3)
      expect(counters.transactions).toBe(1)
      expect(resumed).toEqual(["a", "b", "c"])
      // Released means released: the next write commits at once again.
      commit.enqueue(() => insert.run("d"), () => {})
      expect(count(db)).toBe(4)
    }).pipe(Effect.ensuring(Effect.sync(cleanup)))
  })
})

describe("WAL flush", () => {
  it.scopedLive("fdatasyncs the -wal file of a WAL database after commits", () =>
    Effect.gen(function*() {
      const dir = Fs.mkdtempSync(Path.join(Os.tmpdir(), "resonance-wal-"))
      const file = Path.join(dir, "db.sqlite")
      const db = new Database(file)
      yield* Effect.addFinalizer(() => Effect.sync(() => (db.close(), Fs.rmSync(dir, { recursive: true, force: true }))))
      db.pragma("journal_mode = WAL")
      db.pragma("synchronous = NORMAL")
      const wal = yield* makeWalSync(file)
      // Before any write there is no WAL: nothing to flush, and no error.
      yield* wal.sync
      db.exec("CREATE TABLE t (v TEXT)")
      db.prepare("INSERT INTO t VALUES ('x')").run()
      expect(Fs.existsSync(`${file}-wal`)).toBe(true)
      yield* wal.sync
      const flushed = yield* Effect.async<Error | undefined>((resume) => wal.flush((error) => resume(Effect.succeed(error))))
      expect(flushed).toBeUndefined()
    }))

  it.scopedLive("one fdatasync at a time: flushes asked for while one runs share the next, which starts after it", () =>
    Effect.gen(function*() {
      const dir = Fs.mkdtempSync(Path.join(Os.tmpdir(), "resonance-wal-"))
      yield* Effect.addFinalizer(() => Effect.sync(() => Fs.rmSync(dir, { recursive: true, force: true })))
      const file = Path.join(dir, "db.sqlite")
      Fs.writeFileSync(`${file}-wal`, "")
      // A disk that answers only when told to.
      const pending: Array<(error: NodeJS.ErrnoException | null) => void> = []
      const durations: Array<number> = []
      const wal = yield* makeWalSync(file, {
        fdatasync: (_fd, callback) => void pending.push(callback),
        flushed: (seconds) => void durations.push(seconds)
      })
      const done: Array<string> = []
      wal.flush(() => done.push("a"))
      expect(pending.length).toBe(1)
      // Committed while the first runs: that one may have begun before their frames were written.
      wal.flush(() => done.push("b"))
      wal.flush(() => done.push("c"))
      expect(pending.length).toBe(1)
      pending.shift()!(null)
      expect(done).toEqual(["a"])
      // The second one started as the first ended, for both of them.
      expect(pending.length).toBe(1)
      wal.flush(() => done.push("d"))
      pending.shift()!(null)
      expect(done).toEqual(["a", "b", "c"])
      expect(pending.length).toBe(1)
      const failure = Object.assign(new Error("EIO"), { code: "EIO" })
      pending.shift()!(failure)
      expect(done).toEqual(["a", "b", "c", "d"])
      expect(pending.length).toBe(0)
      // An error reaches the callers of that flush, and the next flush runs again.
      const errors: Array<Error | undefined> = []
      wal.flush((error) => errors.push(error))
      pending.shift()!(failure)
      wal.flush((error) => errors.push(error))
      pending.shift()!(null)
      expect(errors).toEqual([failure, undefined])
      // Each fdatasync is timed once, however many flushes it answered.
      expect(durations.length).toBe(5)
      expect(durations.every((seconds) => seconds >= 0 && seconds < 5)).toBe(true)
    }))

  it.scopedLive("the serving connection syncs nothing while a WalSync flushes for it, and syncs again before it closes", () =>
    Effect.gen(function*() {
      const dir = Fs.mkdtempSync(Path.join(Os.tmpdir(), "resonance-wal-"))
      yield* Effect.addFinalizer(() => Effect.sync(() => Fs.rmSync(dir, { recursive: true, force: true })))
      const file = Path.join(dir, "db.sqlite")
      const db = new Database(file)
      db.pragma("journal_mode = WAL")
      db.pragma("synchronous = NORMAL")
      db.pragma("wal_autocheckpoint = 0")
      const synchronous = () => Number(db.pragma("synchronous", { simple: true }))
      yield* Effect.scoped(Effect.gen(function*() {
        yield* syncThroughWalSync(db)
        expect(synchronous()).toBe(0)
        db.exec("CREATE TABLE t (v TEXT)")
        db.prepare("INSERT INTO t VALUES ('x')").run()
      }))
      // NORMAL again: the close below checkpoints the WAL into the database (synced) and deletes it.
      expect(synchronous()).toBe(1)
      db.close()
      expect(Fs.existsSync(`${file}-wal`)).toBe(false)
      const reopened = new Database(file, { readonly: true })
      expect(reopened.prepare("SELECT count(*) AS n FROM t").get()).toEqual({ n: 1 })
      reopened.close()
    }))
})

describe("checkpointer", () => {
  it.scopedLive("copies WAL pages into the database file from its own thread", () =>
    Effect.gen(function*() {
      const { db, file } = yield* scopedWalDb("v TEXT")
      const insert = db.prepare("INSERT INTO t VALUES (?)")
      db.transaction(() => {
        for (let i = 0; i < 2000; i++) insert.run("x".repeat(200))
      })()
      const before = Fs.statSync(file).size
      const durations: Array<number> = []
      const checkpointer = yield* makeCheckpointer(file, undefined, { checkpointed: (seconds) => void durations.push(seconds) })
      checkpointer.request()
      let after = before
      // Until the whole copy is in (or 2 s): the thread writes page by page, so a size read in
      // between saw part of it (a CI run on a busy VM stopped at 139,264 of ~400,000 bytes).
      for (let i = 0; i < 100 && after <= before + 200_000; i++) {
        yield* Effect.sleep("20 millis")
        after = Fs.statSync(file).size
      }
      expect(after).toBeGreaterThan(before + 200_000)
      expect((db.prepare("SELECT count(*) AS n FROM t").get() as { n: number }).n).toBe(2000)
      // The worker's answer, timed once (it may come a moment after the file has grown).
      for (let i = 0; i < 100 && durations.length === 0; i++) yield* Effect.sleep("10 millis")
      expect(durations.length).toBe(1)
      expect(durations[0]).toBeGreaterThan(0)
      expect(durations[0]).toBeLessThan(5)
    }))

  it.scoped("asks for a checkpoint each interval while commits come in, and once a second when none do, with no short timer left", () =>
    Effect.gen(function*() {
      vi.useFakeTimers({ toFake: ["setInterval", "clearInterval"] })
      yield* Effect.addFinalizer(() => Effect.sync(() => void vi.useRealTimers()))
      const advance = (ms: number) => Effect.sync(() => vi.advanceTimersByTime(ms))
      let requests = 0
      const counters = makeCounters()
      const schedule = yield* scheduleCheckpoints({ request: () => void requests++ }, counters, 20)
      // The first at once: a WAL left by a crash.
      expect(requests).toBe(1)
      requests = 0
      // Idle: one request a second, on the one timer there is.
      yield* advance(1_000)
      expect(requests).toBe(1)
      expect(vi.getTimerCount()).toBe(1)
      // Writing: every 20 ms tick that follows a commit asks for one.
      requests = 0
      for (let tick = 0; tick < 10; tick++) {
        counters.transactions++
        schedule.wake()
        yield* advance(20)
      }
      expect(requests).toBe(10)
      expect(vi.getTimerCount()).toBe(2)
      // A second without a commit: one request as the short timer stops, then one a second again.
      requests = 0
      yield* advance(1_000)
      expect(requests).toBeGreaterThanOrEqual(1)
      expect(requests).toBeLessThanOrEqual(2)
      expect(vi.getTimerCount()).toBe(1)
      requests = 0
      yield* advance(2_000)
      expect(requests).toBe(2)
      // A commit whose wake never came is still noticed, by the once-a-second tick.
      counters.transactions++
      yield* advance(1_000)
      expect(vi.getTimerCount()).toBe(2)
      requests = 0
      counters.transactions++
      yield* advance(20)
      expect(requests).toBe(1)
    }))

  it.scopedLive("after a burst the WAL file is cut back to its cap once the log starts over, and kept without one", () =>
    Effect.gen(function*() {
      /** A burst of ~1.2 MB in one transaction, a checkpoint from the worker, then one more commit. */
      const burstThenCommit = (cap: boolean) =>
        Effect.gen(function*() {
          const { db, file } = yield* scopedWalDb("v TEXT")
          const limit = cap ? limitWalFile(db, 50) : undefined
          const insert = db.prepare("INSERT INTO t VALUES (?)")
          db.transaction(() => {
            for (let i = 0; i < 3000; i++) insert.run("x".repeat(400))
          })()
          const burst = Fs.statSync(`${file}-wal`).size
          let answered = false
          const checkpointer = yield* makeCheckpointer(file, undefined, { checkpointed: () => void (answered = true) })
          checkpointer.request()
          // Until the worker has answered (or 5 s): the database file grows page by page while it
          // copies, so its size alone says too early that the copy is done.
          for (let i = 0; i < 250 && !answered; i++) yield* Effect.sleep("20 millis")
          expect(answered).toBe(true)
          expect(Fs.statSync(file).size).toBeGreaterThan(1_000_000)
          // The log was wholly copied, so this commit starts it over (and, capped, cuts the file).
          insert.run("after")
          return { burst, after: Fs.statSync(`${file}-wal`).size, limit }
        })
      const capped = yield* burstThenCommit(true)
      expect(capped.limit).toBe(32 + 63 * 4_120)
      expect(capped.burst).toBeGreaterThan(1_000_000)
      expect(capped.after).toBeLessThanOrEqual(capped.limit!)
      const uncapped = yield* burstThenCommit(false)
      expect(uncapped.after).toBe(uncapped.burst)
    }))

  it.scoped("under steady commits the WAL starts over instead of growing: once the log is long, a second checkpoint holds the writes", () =>
    Effect.gen(function*() {
      const { db, file } = yield* scopedWalDb("id INTEGER PRIMARY KEY, v TEXT NOT NULL")
      const insert = db.prepare("INSERT INTO t (v) VALUES (?)")
      const counters = makeCounters()
      const commit = makeGroupCommit(db, counters, { minIntervalMs: 0 })
      let held = 0
      const watched = { hold: () => (held++, commit.hold()), release: commit.release }
      const checkpointer = yield* makeCheckpointer(file, watched, { restartFrames: 50 })
      // A commit every turn of the loop and a checkpoint asked for every fourth, for 1.5 s: a
      // checkpoint beside the commits rarely finds the log wholly copied when a write begins.
      const until = Date.now() + 1_500
      let largest = 0
      let ticks = 0
      while (Date.now() < until) {
        commit.enqueue(() => insert.run("x".repeat(300)), () => {})
        if (++ticks % 4 === 0) checkpointer.request()
        largest = Math.max(largest, Fs.statSync(`${file}-wal`).size)
        // A turn of the event loop, where the worker's answers come in.
        yield* Effect.promise(() => new Promise((resolve) => setImmediate(resolve)))
      }
      expect(counters.transactions).toBeGreaterThan(500)
      expect(held).toBeGreaterThan(0)
      // Each commit appends at least one 4 KB frame: a log that never started over would be at least
      // that long (136 MB for 30,000 commits here without the hold); this one is a small part of it.
      expect(largest).toBeLessThan((counters.transactions * 4_120) / 4)
    }))
})
