import Database from "better-sqlite3"
import { describe, expect, it } from "vitest"
import { makeSessionCache } from "../../src/adapters/logic-embedded/SessionCache.js"
import { makeCounters, preparer } from "../../src/adapters/logic-embedded/Statements.js"

const database = (sessions: number) => {
  const db = new Database(":memory:")
  db.defaultSafeIntegers(true)
  db.exec(`
    CREATE TABLE users (username TEXT PRIMARY KEY, nickname TEXT NOT NULL, avatar_url TEXT NOT NULL);
    CREATE TABLE sessions (session_id TEXT PRIMARY KEY, type INTEGER, name TEXT, avatar_url TEXT, max_seq INTEGER, last_msg_id INTEGER);
    CREATE TABLE session_members (session_id TEXT, username TEXT, joined_seq INTEGER);
    INSERT INTO users VALUES ('ann', 'Ann', ''), ('bob', 'Bob', '');
  `)
  for (let i = 0; i < sessions; i++) {
    db.prepare("INSERT INTO sessions VALUES (?, 2, ?, '', ?, 0)").run(`s${i}`, `room ${i}`, BigInt(i))
    db.prepare("INSERT INTO session_members VALUES (?, 'ann', 0), (?, 'bob', 0)").run(`s${i}`, `s${i}`)
  }
  const counters = makeCounters()
  return { db, counters, prepare: preparer(db, counters) }
}

describe("SessionCache", () => {
  it("a hit reads nothing; a session read once stays cached while it is used", () => {
    const { counters, prepare } = database(3)
    const cache = makeSessionCache(prepare, 4)
    expect(cache.get("s1")?.name).toBe("room 1")
    expect(cache.memberNames(cache.get("s1")!)).toEqual(["ann", "bob"])
    const reads = counters.statements
    for (let i = 0; i < 100; i++) {
      expect(cache.get("s1")?.maxSeq).toBe(1n)
      cache.memberNames(cache.get("s1")!)
    }
    expect(counters.statements).toBe(reads)
    expect(cache.get("nope")).toBeUndefined()
  })

  it("holds at most its capacity: sessions unused for a generation are read again, used ones survive", () => {
    const { counters, prepare } = database(20)
    const cache = makeSessionCache(prepare, 4)
    cache.get("s0")
    for (let i = 1; i < 20; i++) {
      cache.get(`s${i}`)
      cache.get("s0") // kept hot: moved up whenever it falls into the older generation
    }
    let reads = counters.statements
    cache.get("s0")
    expect(counters.statements).toBe(reads) // still cached
    cache.get("s1")
    expect(counters.statements).toBe(reads + 1) // evicted long ago: read again
    reads = counters.statements
    let held = 0
    for (let i = 0; i < 20; i++) {
      const before = counters.statements
      cache.get(`s${i}`)
      if (counters.statements === before) held++
    }
    expect(held).toBeLessThanOrEqual(4)
    expect(counters.statements).toBeGreaterThan(reads)
  })

  it("a join updates the cached members, and clear drops everything", () => {
    const { counters, prepare, db } = database(1)
    const cache = makeSessionCache(prepare, 4)
    const session = cache.get("s0")!
    expect(cache.memberNames(session)).toEqual(["ann", "bob"])
    cache.joined("s0", { username: "cy", nickname: "Cy", avatarUrl: "", joinedSeq: 0n })
    expect(cache.memberNames(cache.get("s0")!)).toEqual(["ann", "bob", "cy"])
    db.prepare("UPDATE sessions SET name = 'renamed'").run()
    expect(cache.get("s0")?.name).toBe("room 0")
    cache.clear()
    const reads = counters.statements
    expect(cache.get("s0")?.name).toBe("renamed")
    expect(counters.statements).toBe(reads + 1)
  })
})
