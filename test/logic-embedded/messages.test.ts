import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { snowflakeParts } from "../../src/adapters/logic-embedded/Snowflake.js"
import { chat, failure, fixture, registerAll, sessionsOf } from "./helpers.js"

const direct = (logic: Effect.Effect.Success<ReturnType<typeof fixture>>["logic"], a: string, b: string) =>
  logic.createSession({ creatorUsername: a, members: [b], name: "", type: 1 })

describe("LogicEmbedded messages", () => {
  it.scopedLive("sendMessage stores the message, returns snowflake msg_id and the next seq_id", () =>
    Effect.gen(function*() {
      const { logic } = yield* fixture()
      yield* registerAll(logic, "alice", "bob")
      const id = yield* direct(logic, "alice", "bob")
      const before = Date.now()
      // A caller's timestamp (here year 2100) is not stored: Logic's clock is.
      const first = yield* logic.sendMessage(chat(id, "alice", "hi bob", { timestamp: 4_102_444_800n }))
      const second = yield* logic.sendMessage(chat(id, "bob", "hi alice"))
      expect(first.seqId).toBe(2n)
      expect(second.seqId).toBe(3n)
      expect(second.msgId > first.msgId).toBe(true)
      expect(Math.abs(snowflakeParts(first.msgId).timestampMs - before)).toBeLessThan(60_000)
      const history = yield* logic.getHistoryMessages({ username: "bob", sessionId: id, limit: 0n, beforeSeq: 0n })
      expect(history.slice(1)).toMatchObject([
        { msgId: first.msgId, seqId: 2n, fromUsername: "alice", toUsername: "bob", content: "hi bob", type: "text" },
        { msgId: second.msgId, seqId: 3n, fromUsername: "bob", toUsername: "alice", content: "hi alice" }
      ])
      for (const message of history.slice(1)) expect(Math.abs(Number(message.timestamp) - before / 1000)).toBeLessThan(60)
    }))

  it.scopedLive("a non-member is refused with permission_denied \"not a session member\"; unknown session is not_found", () =>
    Effect.gen(function*() {
      const { logic, published } = yield* fixture()
      yield* registerAll(logic, "alice", "bob", "eve")
      const id = yield* direct(logic, "alice", "bob")
      const publishedBefore = published.length
      expect(yield* failure(logic.sendMessage(chat(id, "eve", "let me in")))).toMatchObject({
        code: "permission_denied",
        message: "not a session member"
      })
      expect((yield* failure(logic.sendMessage(chat("group:404", "alice", "anyone?")))).code).toBe("not_found")
      expect(yield* failure(logic.getHistoryMessages({ username: "eve", sessionId: id, limit: 0n, beforeSeq: 0n }))).toMatchObject({
        code: "permission_denied",
        message: "not a session member"
      })
      expect((yield* failure(logic.updateReadPosition({ username: "eve", sessionId: id, seqId: 1n }))).code).toBe("permission_denied")
      expect(published.length).toBe(publishedBefore)
      // The refusals consumed no seq: the next message follows the system message directly.
      expect((yield* logic.sendMessage(chat(id, "alice", "still here"))).seqId).toBe(2n)
    }))

  it.scopedLive("sendMessage refuses empty content and unsupported or reserved types", () =>
    Effect.gen(function*() {
      const { logic } = yield* fixture()
      yield* registerAll(logic, "alice")
      for (const request of [chat("0", "alice", ""), chat("0", "alice", "x", { type: "sticker" }), chat("0", "alice", "x", { type: "system" })]) {
        expect((yield* failure(logic.sendMessage(request))).code).toBe("invalid_argument")
      }
      const image = yield* logic.sendMessage(chat("0", "alice", "https://img", { type: "image" }))
      expect(image.seqId).toBe(1n)
    }))

  it.scopedLive("seq_id has no gaps or duplicates under many concurrent senders", () =>
    Effect.gen(function*() {
      const { logic } = yield* fixture()
      const users = ["u1", "u2", "u3", "u4"]
      yield* registerAll(logic, ...users)
      const id = yield* logic.createSession({ creatorUsername: "u1", members: users, name: "load", type: 2 })
      const results = yield* Effect.all(
        Array.from({ length: 200 }, (_, i) => logic.sendMessage(chat(id, users[i % 4]!, `m${i}`))),
        { concurrency: "unbounded" }
      )
      const seqs = results.map((result) => result.seqId).sort((a, b) => (a < b ? -1 : a > b ? 1 : 0))
      expect(seqs).toEqual(Array.from({ length: 200 }, (_, i) => BigInt(i + 2)))
      expect(new Set(results.map((result) => result.msgId)).size).toBe(200)
      const inbox = yield* logic.pullInboxDelta({ username: "u3", cursorId: 0n, limit: 500n })
      expect(inbox.events.map((event) => event.message?.seqId)).toEqual(Array.from({ length: 201 }, (_, i) => BigInt(i + 1)))
    }))

  it.scopedLive("history pages backwards with before_seq, ascending within a page, default 20 and at most 100", () =>
    Effect.gen(function*() {
      const { logic } = yield* fixture()
      yield* registerAll(logic, "alice")
      yield* Effect.forEach(Array.from({ length: 150 }, (_, i) => i + 1), (i) => logic.sendMessage(chat("0", "alice", `m${i}`)), {
        discard: true
      })
      const page = (limit: bigint, beforeSeq: bigint) =>
        logic.getHistoryMessages({ username: "alice", sessionId: "0", limit, beforeSeq }).pipe(
          Effect.map((messages) => messages.map((message) => Number(message.seqId)))
        )
      const range = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => from + i)
      expect(yield* page(0n, 0n)).toEqual(range(131, 150))
      expect(yield* page(0n, 131n)).toEqual(range(111, 130))
      expect(yield* page(5n, 3n)).toEqual([1, 2])
      expect(yield* page(1000n, 0n)).toEqual(range(51, 150))
      expect(yield* page(10n, 1n)).toEqual([])
      const [newest] = yield* logic.getHistoryMessages({ username: "alice", sessionId: "0", limit: 1n, beforeSeq: 0n })
      expect(newest?.content).toBe("m150")
      expect(newest?.sessionMeta).toEqual({ name: "Resonance Room", type: 2 })
    }))

  it.scopedLive("unread counts fall after updateReadPosition, which never moves back nor past the end", () =>
    Effect.gen(function*() {
      const { logic } = yield* fixture()
      yield* registerAll(logic, "alice", "bob")
      const id = yield* direct(logic, "alice", "bob")
      yield* Effect.forEach(["one", "two", "three", "four"], (text) => logic.sendMessage(chat(id, "alice", text)), { discard: true })
      const unreadOf = (username: string) =>
        sessionsOf(logic, username).pipe(Effect.map((sessions) => sessions.find((session) => session.sessionId === id)))
      expect(yield* unreadOf("bob")).toMatchObject({ unreadCount: 5n, lastReadSeq: 0n })
      expect(yield* unreadOf("alice")).toMatchObject({ unreadCount: 0n, lastReadSeq: 5n })
      expect(yield* logic.updateReadPosition({ username: "bob", sessionId: id, seqId: 3n })).toBe(2n)
      expect(yield* unreadOf("bob")).toMatchObject({ unreadCount: 2n, lastReadSeq: 3n })
      expect(yield* logic.updateReadPosition({ username: "bob", sessionId: id, seqId: 1n })).toBe(2n)
      expect(yield* logic.updateReadPosition({ username: "bob", sessionId: id, seqId: 99n })).toBe(0n)
      expect(yield* unreadOf("bob")).toMatchObject({ unreadCount: 0n, lastReadSeq: 5n })
      yield* logic.sendMessage(chat(id, "alice", "five"))
      expect((yield* unreadOf("bob"))?.unreadCount).toBe(1n)
      expect((yield* failure(logic.updateReadPosition({ username: "bob", sessionId: "nope", seqId: 1n }))).code).toBe("not_found")
    }))

  it.scopedLive("pullInboxDelta pages by cursor with has_more, per user, default 100 and at most 500", () =>
    Effect.gen(function*() {
      const { logic } = yield* fixture()
      yield* registerAll(logic, "alice", "bob", "carol")
      const id = yield* direct(logic, "alice", "bob")
      yield* Effect.forEach(Array.from({ length: 7 }, (_, i) => i), (i) => logic.sendMessage(chat(id, i % 2 ? "bob" : "alice", `d${i}`)), {
        discard: true
      })
      const first = yield* logic.pullInboxDelta({ username: "bob", cursorId: 0n, limit: 3n })
      expect(first.events.map((event) => event.message?.seqId)).toEqual([1n, 2n, 3n])
      expect(first.hasMore).toBe(true)
      expect(first.nextCursorId).toBe(first.events[2]!.inboxId)
      const second = yield* logic.pullInboxDelta({ username: "bob", cursorId: first.nextCursorId, limit: 3n })
      expect(second.events.map((event) => event.message?.seqId)).toEqual([4n, 5n, 6n])
      const third = yield* logic.pullInboxDelta({ username: "bob", cursorId: second.nextCursorId, limit: 3n })
      expect(third.events.map((event) => event.message?.content)).toEqual(["d5", "d6"])
      expect(third.hasMore).toBe(false)
      const empty = yield* logic.pullInboxDelta({ username: "bob", cursorId: third.nextCursorId, limit: 3n })
      expect(empty).toEqual({ events: [], nextCursorId: third.nextCursorId, hasMore: false })
      const ids = [...first.events, ...second.events, ...third.events].map((event) => event.inboxId)
      expect(ids.every((inboxId, i) => i === 0 || inboxId > ids[i - 1]!)).toBe(true)
      expect(third.events[0]?.message?.sessionMeta).toEqual({ name: "alice", type: 1 })
      expect((yield* logic.pullInboxDelta({ username: "carol", cursorId: 0n, limit: 0n })).events).toEqual([])

      yield* Effect.forEach(Array.from({ length: 620 }, (_, i) => i), (i) => logic.sendMessage(chat("0", "carol", `r${i}`)), {
        discard: true
      })
      const byDefault = yield* logic.pullInboxDelta({ username: "carol", cursorId: 0n, limit: 0n })
      expect(byDefault.events).toHaveLength(100)
      expect(byDefault.hasMore).toBe(true)
      const capped = yield* logic.pullInboxDelta({ username: "carol", cursorId: 0n, limit: 10_000n })
      expect(capped.events).toHaveLength(500)
      const webClient = yield* logic.pullInboxDelta({ username: "alice", cursorId: 0n, limit: 200n })
      expect(webClient.events).toHaveLength(200)
    }))

  it.scopedLive("every member is published to once the message is durable, the sender included, with per-side session meta", () =>
    Effect.gen(function*() {
      const { logic, published } = yield* fixture()
      yield* logic.register({ username: "alice", password: "secret1", nickname: "Alice" })
      yield* logic.register({ username: "bob", password: "secret1", nickname: "Bob" })
      yield* registerAll(logic, "carol")
      const id = yield* direct(logic, "alice", "bob")
      published.length = 0
      const sent = yield* logic.sendMessage(chat(id, "alice", "psst", { toUsername: "mallory" }), { idempotencyKey: "boot:42:seq-1" })
      // Offered by the time the send answers; the sender's own socket is spared by the gateway's gate.
      expect(published.map((entry) => entry.recipients)).toEqual([["alice"], ["bob"]])
      for (const entry of published) {
        expect(entry.message).toMatchObject({ msgId: sent.msgId, seqId: sent.seqId, sessionId: id, toUsername: "bob", content: "psst" })
      }
      expect(published[0]!.message.sessionMeta).toEqual({ name: "Bob", type: 1 })
      expect(published[1]!.message.sessionMeta).toEqual({ name: "Alice", type: 1 })

      published.length = 0
      yield* logic.sendMessage(chat("0", "carol", "hello everyone"))
      expect(published).toHaveLength(1)
      expect(published[0]!.recipients.slice().sort()).toEqual(["alice", "bob", "carol"])
      expect(published[0]!.message.sessionMeta).toEqual({ name: "Resonance Room", type: 2 })
    }))

  it.scopedLive("a chat to a direct session nobody created yet creates it; to_username alone names it", () =>
    Effect.gen(function*() {
      const { logic } = yield* fixture()
      yield* registerAll(logic, "alice", "bob")
      const first = yield* logic.sendMessage(chat("single:alice:bob", "bob", "first!"))
      expect(first.seqId).toBe(1n)
      const second = yield* logic.sendMessage(chat("", "alice", "reply", { toUsername: "bob" }))
      expect(second.seqId).toBe(2n)
      expect((yield* logic.getContactList("alice")).map((contact) => contact.username)).toEqual(["bob"])
      expect((yield* failure(logic.sendMessage(chat("single:bob:ghost", "bob", "boo")))).code).toBe("not_found")
      expect((yield* failure(logic.sendMessage(chat("single:bob:carol", "alice", "x")))).code).toBe("not_found")
    }))

  it.scopedLive("sendMessagesNow: batches sharing a commit are each answered once it is durable, even when one answer throws", () =>
    Effect.gen(function*() {
      // A long interval: the first batch commits at once, the next two wait for the same commit.
      const { logic, published } = yield* fixture({ commitIntervalMs: 50 })
      yield* registerAll(logic, "alice", "bob")
      const sendNow = logic.sendMessagesNow!
      const answered: Array<string> = []
      const item = (content: string) => ({ chat: chat("0", "alice", content), idempotencyKey: `boot:1:${content}` })
      yield* Effect.async<void>((resume) => {
        sendNow([item("first")], () => answered.push("first"))
        sendNow([item("second")], () => {
          answered.push("second")
          throw new Error("a bug in whoever answers")
        })
        sendNow([item("third"), item("fourth")], (results) => {
          answered.push(`third+fourth ${results.map((r) => r._tag).join(",")}`)
          resume(Effect.void)
        })
      })
      expect(answered).toEqual(["first", "second", "third+fourth Right,Right"])
      expect(published.map((p) => p.message.content)).toEqual(["first", "second", "third", "fourth"])
      const history = yield* logic.getHistoryMessages({ username: "bob", sessionId: "0", limit: 0n, beforeSeq: 0n })
      expect(history.map((m) => m.content)).toEqual(["first", "second", "third", "fourth"])
    }))

  it.scopedLive("sendMessagesNow answers a chat Logic refuses in its place, the others of the batch stored", () =>
    Effect.gen(function*() {
      const { logic } = yield* fixture()
      yield* registerAll(logic, "alice", "bob")
      const results = yield* Effect.async<ReadonlyArray<unknown>>((resume) =>
        logic.sendMessagesNow!(
          [{ chat: chat("0", "alice", "ok") }, { chat: chat("group:404", "alice", "nowhere") }, { chat: chat("0", "bob", "ok too") }],
          (answers) => resume(Effect.succeed(answers))
        )
      )
      expect(results).toMatchObject([
        { _tag: "Right", right: { seqId: 1n } },
        { _tag: "Left", left: { code: "not_found" } },
        { _tag: "Right", right: { seqId: 2n } }
      ])
    }))

  it.scopedLive("a publisher that throws does not fail the send: the message is committed, acked and in the inbox", () =>
    Effect.gen(function*() {
      const { logic } = yield* fixture({}, () => {
        throw new Error("push transport exploded")
      })
      yield* registerAll(logic, "alice")
      const sent = yield* logic.sendMessage(chat("0", "alice", "durable"))
      const inbox = yield* logic.pullInboxDelta({ username: "alice", cursorId: 0n, limit: 0n })
      expect(inbox.events.map((event) => event.message?.msgId)).toEqual([sent.msgId])
    }))
})
