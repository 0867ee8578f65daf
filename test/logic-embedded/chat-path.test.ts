import { describe, expect, it } from "@effect/vitest"
import Database from "better-sqlite3"
import { Effect } from "effect"
import * as path from "node:path"
import { makeEmbeddedLogic } from "../../src/adapters/logic-embedded/LogicEmbedded.js"
import { migrate } from "../../src/adapters/logic-embedded/Schema.js"
import { chat, failure, fixture, recorder, registerAll, SECRET, tempDir } from "./helpers.js"

/** The counters' change while `effect` runs. */
const measured = <A, E, R>(counters: { statements: number; rowsWritten: number }, effect: Effect.Effect<A, E, R>) =>
  Effect.gen(function*() {
    const before = { ...counters }
    const value = yield* effect
    return { value, statements: counters.statements - before.statements, rows: counters.rowsWritten - before.rowsWritten }
  })

describe("the chat path of the embedded Logic", () => {
  it.scopedLive("a direct message is three statements and three rows: no read, members and positions cached", () =>
    Effect.gen(function*() {
      const { logic } = yield* fixture()
      yield* registerAll(logic, "alice", "bob")
      const id = yield* logic.createSession({ creatorUsername: "alice", members: ["bob"], name: "", type: 1 })
      yield* logic.sendMessage(chat(id, "alice", "warm"))
      const sent = yield* measured(logic.counters, logic.sendMessage(chat(id, "bob", "hello")))
      expect(sent.statements).toBe(3)
      expect(sent.rows).toBe(3)
    }))

  it.scopedLive("a message to a room of 200 writes three rows, not one per member", () =>
    Effect.gen(function*() {
      const { logic } = yield* fixture()
      const users = Array.from({ length: 200 }, (_, i) => `member${i}`)
      yield* Effect.forEach(users, (username) => logic.register({ username, password: "secret1", nickname: "" }), { concurrency: 8 })
      yield* logic.sendMessage(chat("0", "member0", "warm"))
      const sent = yield* measured(logic.counters, logic.sendMessage(chat("0", "member7", "hello room")))
      expect(sent.rows).toBe(3)
      expect(sent.statements).toBe(3)
      // Every member still finds it in their inbox.
      const inbox = yield* logic.pullInboxDelta({ username: "member199", cursorId: 0n, limit: 0n })
      expect(inbox.events.map((event) => event.message?.content)).toEqual(["warm", "hello room"])
    }))

  it.scopedLive("an idempotency key stores a message once: a retry gets the first msg_id and seq_id back", () =>
    Effect.gen(function*() {
      const { logic, published } = yield* fixture()
      yield* registerAll(logic, "alice", "bob")
      const id = yield* logic.createSession({ creatorUsername: "alice", members: ["bob"], name: "", type: 1 })
      published.length = 0
      const first = yield* logic.sendMessage(chat(id, "alice", "once"), { idempotencyKey: "boot:7:seq-1" })
      const retry = yield* measured(logic.counters, logic.sendMessage(chat(id, "alice", "once"), { idempotencyKey: "boot:7:seq-1" }))
      expect(retry.value).toEqual(first)
      expect(retry.rows).toBe(0)
      // Same key from another sender, or no key, is another message.
      const bobs = yield* logic.sendMessage(chat(id, "bob", "once"), { idempotencyKey: "boot:7:seq-1" })
      const unkeyed = yield* logic.sendMessage(chat(id, "alice", "once"))
      expect([bobs.seqId, unkeyed.seqId]).toEqual([first.seqId + 1n, first.seqId + 2n])
      const history = yield* logic.getHistoryMessages({ username: "bob", sessionId: id, limit: 0n, beforeSeq: 0n })
      expect(history.filter((m) => m.content === "once")).toHaveLength(3)
      // The retry published nothing either.
      expect(new Set(published.map((entry) => entry.message.msgId)).size).toBe(3)
    }))

  it.scopedLive("msg_id order is commit order, so an inbox cursor never skips a message committed later", () =>
    Effect.gen(function*() {
      const { logic } = yield* fixture()
      yield* registerAll(logic, "alice", "bob", "carol")
      // Chats queued for the next group commit, and a session created in between.
      const pending = Effect.all(
        Array.from({ length: 5 }, (_, i) => logic.sendMessage(chat("0", "alice", `queued ${i}`))),
        { concurrency: "unbounded" }
      )
      const [sent, created] = yield* Effect.all([
        pending,
        logic.createSession({ creatorUsername: "bob", members: ["alice"], name: "", type: 1 })
      ], { concurrency: "unbounded" })
      expect(created).toBe("single:alice:bob")
      const pages: Array<bigint> = []
      let cursor = 0n
      for (let more = true; more;) {
        const page = yield* logic.pullInboxDelta({ username: "alice", cursorId: cursor, limit: 2n })
        pages.push(...page.events.map((event) => event.inboxId))
        cursor = page.nextCursorId
        more = page.hasMore
      }
      expect(pages).toEqual([...pages].sort((a, b) => (a < b ? -1 : 1)))
      expect(new Set(pages).size).toBe(6)
      for (const result of sent) expect(pages).toContain(result.msgId)
    }))

  it.scopedLive("a version-2 file upgrades: inboxes keep their messages and an old cursor continues without repeats", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      const databasePath = path.join(dir, "old.db")
      const raw = new Database(databasePath)
      raw.pragma("journal_mode = WAL")
      migrate(raw, 1_700_000_000_000, 2)
      raw.exec(`
        INSERT INTO users (username, password_hash, nickname, created_at) VALUES ('alice', 'x', 'Alice', 1), ('bob', 'x', 'Bob', 1);
        INSERT INTO session_members (session_id, username, last_read_seq, joined_at) VALUES ('0', 'alice', 0, 1), ('0', 'bob', 1, 1);
        UPDATE sessions SET max_seq = 3 WHERE session_id = '0';
        INSERT INTO messages (session_id, seq_id, msg_id, from_username, to_username, content, type, timestamp) VALUES
          ('0', 1, 7000000000000000001, 'alice', '', 'one', 'text', 1),
          ('0', 2, 7000000000000000002, 'alice', '', 'two', 'text', 1),
          ('0', 3, 7000000000000000003, 'bob', '', 'three', 'text', 1);
        INSERT INTO inbox (username, session_id, seq_id) VALUES
          ('alice', '0', 1), ('alice', '0', 2), ('alice', '0', 3), ('bob', '0', 2), ('bob', '0', 3);
      `)
      raw.close()
      const logic = yield* makeEmbeddedLogic({ databasePath, bcryptRounds: 4, secretKey: SECRET }, recorder().publish).pipe(Effect.orDie)
      const contents = (events: ReadonlyArray<{ readonly message: { readonly content: string } | undefined }>) =>
        events.map((event) => event.message?.content)
      expect(contents((yield* logic.pullInboxDelta({ username: "alice", cursorId: 0n, limit: 0n })).events)).toEqual(["one", "two", "three"])
      // bob joined after "one": his inbox still starts at "two".
      expect(contents((yield* logic.pullInboxDelta({ username: "bob", cursorId: 0n, limit: 0n })).events)).toEqual(["two", "three"])
      // alice's client had read up to her inbox row 2 ("two") under the old numbering.
      const resumed = yield* logic.pullInboxDelta({ username: "alice", cursorId: 2n, limit: 0n })
      expect(contents(resumed.events)).toEqual(["three"])
      expect(resumed.nextCursorId).toBe(7000000000000000003n)
      const next = yield* logic.sendMessage(chat("0", "bob", "four"))
      expect(next.seqId).toBe(4n)
      expect(contents((yield* logic.pullInboxDelta({ username: "alice", cursorId: resumed.nextCursorId, limit: 0n })).events)).toEqual(["four"])
    }))

  it.scopedLive("a second Logic on the same database file is refused at start, naming the file", () =>
    Effect.gen(function*() {
      const { databasePath } = yield* fixture()
      const second = yield* failure(
        makeEmbeddedLogic({ databasePath, bcryptRounds: 4, secretKey: SECRET }, recorder().publish) as never
      ).pipe(Effect.orElse(() => Effect.die("expected a refusal")))
      expect(second).toMatchObject({ _tag: "EmbeddedLogicError", reason: "InUse" })
      expect((second as unknown as { message: string }).message).toContain(databasePath)
    }))
})
