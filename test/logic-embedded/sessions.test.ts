import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { chat, failure, fixture, registerAll, sessionsOf } from "./helpers.js"

describe("LogicEmbedded sessions", () => {
  it.scopedLive("every new user is in session 0, the Resonance Room, with nothing unread", () =>
    Effect.gen(function*() {
      const { logic } = yield* fixture()
      yield* registerAll(logic, "alice")
      yield* logic.sendMessage(chat("0", "alice", "hello room"))
      yield* registerAll(logic, "bob")
      const [room] = yield* sessionsOf(logic, "bob")
      expect(room).toMatchObject({ sessionId: "0", name: "Resonance Room", type: 2, unreadCount: 0n, lastReadSeq: 1n })
      expect(room?.lastMessage?.content).toBe("hello room")
      yield* logic.sendMessage(chat("0", "alice", "welcome bob"))
      expect((yield* sessionsOf(logic, "bob"))[0]?.unreadCount).toBe(1n)
    }))

  it.scopedLive("a direct session is single:<x>:<y> with sorted names, and creating it twice gives the same id", () =>
    Effect.gen(function*() {
      const { logic, published } = yield* fixture()
      yield* registerAll(logic, "zed", "amy")
      const id = yield* logic.createSession({ creatorUsername: "zed", members: ["amy"], name: "", type: 1 })
      expect(id).toBe("single:amy:zed")
      const again = yield* logic.createSession({ creatorUsername: "amy", members: ["zed", "amy"], name: "", type: 1 })
      expect(again).toBe(id)
      const history = yield* logic.getHistoryMessages({ username: "amy", sessionId: id, limit: 0n, beforeSeq: 0n })
      expect(history.map((message) => message.type)).toEqual(["system"])
      expect(published.filter((entry) => entry.message.sessionId === id)).toHaveLength(2)
    }))

  it.scopedLive("a direct session is named after the other member for each side", () =>
    Effect.gen(function*() {
      const { logic } = yield* fixture()
      yield* logic.register({ username: "alice", password: "secret1", nickname: "Alice A." })
      yield* logic.register({ username: "bob", password: "secret1", nickname: "Bob B." })
      const id = yield* logic.createSession({ creatorUsername: "alice", members: ["bob"], name: "", type: 1 })
      const forAlice = (yield* sessionsOf(logic, "alice")).find((session) => session.sessionId === id)
      const forBob = (yield* sessionsOf(logic, "bob")).find((session) => session.sessionId === id)
      expect(forAlice).toMatchObject({ name: "Bob B.", type: 1 })
      expect(forBob).toMatchObject({ name: "Alice A.", type: 1 })
      expect(forBob?.lastMessage?.sessionMeta).toEqual({ name: "Alice A.", type: 1 })
    }))

  it.scopedLive("creating a group includes the creator, needs a name and posts a system message everyone gets", () =>
    Effect.gen(function*() {
      const { logic, published } = yield* fixture()
      yield* registerAll(logic, "alice", "bob", "carol")
      const id = yield* logic.createSession({ creatorUsername: "alice", members: ["bob", "carol", "bob"], name: " Team ", type: 2 })
      expect(id).toMatch(/^group:\d+$/)
      const system = published.find((entry) => entry.message.sessionId === id)
      expect(system?.recipients.slice().sort()).toEqual(["alice", "bob", "carol"])
      // As the Go Logic posts it: from `system`, not from the creator.
      expect(system?.message).toMatchObject({ type: "system", seqId: 1n, fromUsername: "system" })
      expect(system?.message.sessionMeta).toEqual({ name: "Team", type: 2 })
      for (const username of ["bob", "carol"]) {
        const inbox = yield* logic.pullInboxDelta({ username, cursorId: 0n, limit: 0n })
        expect(inbox.events.map((event) => event.message?.sessionId)).toEqual([id])
        const session = (yield* sessionsOf(logic, username)).find((entry) => entry.sessionId === id)
        expect(session).toMatchObject({ name: "Team", type: 2, unreadCount: 1n })
      }
      const forCreator = (yield* sessionsOf(logic, "alice")).find((entry) => entry.sessionId === id)
      expect(forCreator?.unreadCount).toBe(0n)

      const second = yield* logic.createSession({ creatorUsername: "alice", members: ["bob"], name: "Team", type: 2 })
      expect(second).not.toBe(id)
    }))

  it.scopedLive("the first message reads as upstream's Logic writes it, with the creator's nickname", () =>
    Effect.gen(function*() {
      const { logic, published } = yield* fixture()
      yield* logic.register({ username: "alice", password: "secret1", nickname: "爱丽丝" })
      yield* logic.register({ username: "bob", password: "secret1", nickname: "Bob B." })
      yield* registerAll(logic, "carol")
      const direct = yield* logic.createSession({ creatorUsername: "bob", members: ["alice"], name: "", type: 1 })
      const group = yield* logic.createSession({ creatorUsername: "alice", members: ["bob", "carol"], name: "周末", type: 2 })
      const first = (sessionId: string) =>
        logic.getHistoryMessages({ username: "alice", sessionId, limit: 1n, beforeSeq: 0n })
      expect((yield* first(direct)).map((m) => [m.type, m.fromUsername, m.content])).toEqual([["system", "system", "Bob B. 开始了与你的对话"]])
      expect((yield* first(group)).map((m) => [m.type, m.fromUsername, m.content])).toEqual([["system", "system", "爱丽丝 创建了群聊「周末」"]])
      // Pushed in the same words; a user registered without a nickname is named by their username.
      expect(published.filter((entry) => entry.message.sessionId === direct).map((entry) => entry.message.content)).toEqual([
        "Bob B. 开始了与你的对话",
        "Bob B. 开始了与你的对话"
      ])
      const byCarol = yield* logic.createSession({ creatorUsername: "carol", members: ["alice"], name: "", type: 1 })
      expect((yield* first(byCarol))[0]?.content).toBe("carol 开始了与你的对话")
    }))

  it.scopedLive("createSession refuses unknown members, nameless groups and malformed direct sessions", () =>
    Effect.gen(function*() {
      const { logic } = yield* fixture()
      yield* registerAll(logic, "alice", "bob", "carol")
      expect(yield* failure(logic.createSession({ creatorUsername: "alice", members: ["bob", "mallory"], name: "x", type: 2 }))).toMatchObject({
        code: "not_found",
        message: 'user "mallory" not found'
      })
      expect(yield* failure(logic.createSession({ creatorUsername: "alice", members: ["bob"], name: "  ", type: 2 }))).toMatchObject({
        code: "invalid_argument",
        message: "a group session needs a name"
      })
      for (const members of [["bob", "carol"], ["alice"], []]) {
        const error = yield* failure(logic.createSession({ creatorUsername: "alice", members, name: "", type: 1 }))
        expect(error.code).toBe("invalid_argument")
      }
      expect((yield* failure(logic.createSession({ creatorUsername: "alice", members: ["bob"], name: "", type: 7 }))).code).toBe(
        "invalid_argument"
      )
      // No half-created session was left behind by the refusals.
      expect((yield* sessionsOf(logic, "bob")).map((session) => session.sessionId)).toEqual(["0"])
    }))

  it.scopedLive("the session list is ordered by last activity, newest first", () =>
    Effect.gen(function*() {
      const { logic } = yield* fixture()
      yield* registerAll(logic, "alice", "bob", "carol")
      const withBob = yield* logic.createSession({ creatorUsername: "alice", members: ["bob"], name: "", type: 1 })
      yield* Effect.sleep("5 millis")
      const withCarol = yield* logic.createSession({ creatorUsername: "alice", members: ["carol"], name: "", type: 1 })
      yield* Effect.sleep("5 millis")
      expect((yield* sessionsOf(logic, "alice")).map((session) => session.sessionId)).toEqual([withCarol, withBob, "0"])
      yield* logic.sendMessage(chat(withBob, "alice", "ping"))
      yield* Effect.sleep("5 millis")
      expect((yield* sessionsOf(logic, "alice")).map((session) => session.sessionId)).toEqual([withBob, withCarol, "0"])
      yield* logic.sendMessage(chat("0", "carol", "hi all"))
      expect((yield* sessionsOf(logic, "alice")).map((session) => session.sessionId)).toEqual(["0", withBob, withCarol])
    }))

  it.scopedLive("contacts are the users sharing a direct session; group co-members are not contacts", () =>
    Effect.gen(function*() {
      const { logic } = yield* fixture()
      yield* logic.register({ username: "alice", password: "secret1", nickname: "" })
      yield* logic.register({ username: "bob", password: "secret1", nickname: "Bob" })
      yield* registerAll(logic, "carol", "dave")
      expect(yield* logic.getContactList("alice")).toEqual([])
      yield* logic.createSession({ creatorUsername: "alice", members: ["bob"], name: "", type: 1 })
      yield* logic.createSession({ creatorUsername: "carol", members: ["alice"], name: "", type: 1 })
      yield* logic.createSession({ creatorUsername: "alice", members: ["dave"], name: "club", type: 2 })
      expect(yield* logic.getContactList("alice")).toEqual([
        { username: "bob", nickname: "Bob", avatarUrl: "" },
        { username: "carol", nickname: "carol", avatarUrl: "" }
      ])
      expect((yield* logic.getContactList("bob")).map((contact) => contact.username)).toEqual(["alice"])
    }))

  it.scopedLive("searchUser matches username or nickname case-insensitively and treats % and _ literally", () =>
    Effect.gen(function*() {
      const { logic } = yield* fixture()
      yield* logic.register({ username: "alice", password: "secret1", nickname: "Wonderland" })
      yield* logic.register({ username: "malice", password: "secret1", nickname: "" })
      yield* logic.register({ username: "bob_x", password: "secret1", nickname: "Builder" })
      yield* logic.register({ username: "bobby", password: "secret1", nickname: "" })
      const names = (query: string) => logic.searchUser(query).pipe(Effect.map((users) => users.map((user) => user.username)))
      expect(yield* names("ALIC")).toEqual(["alice", "malice"])
      expect(yield* names("wonder")).toEqual(["alice"])
      expect(yield* names("bob_")).toEqual(["bob_x"])
      expect(yield* names("%")).toEqual([])
      expect(yield* names("   ")).toEqual([])
      expect((yield* logic.searchUser("alice"))[0]).toEqual({ username: "alice", nickname: "Wonderland", avatarUrl: "" })
    }))

  it.scopedLive("searchUser returns at most 20 users", () =>
    Effect.gen(function*() {
      const { logic } = yield* fixture()
      yield* Effect.forEach(
        Array.from({ length: 25 }, (_, i) => `user${i}`),
        (username) => logic.register({ username, password: "secret1", nickname: "" }),
        { concurrency: 5 }
      )
      expect(yield* logic.searchUser("user")).toHaveLength(20)
    }))

  it.scopedLive("the session list comes in pages, most recently active first, each session once", () =>
    Effect.gen(function*() {
      const { logic } = yield* fixture({ sessionPageSize: 3 })
      const others = ["b1", "b2", "b3", "b4", "b5", "b6", "b7"]
      yield* registerAll(logic, "alice", ...others)
      for (const other of others) {
        yield* logic.createSession({ creatorUsername: "alice", members: [other], name: "", type: 1 })
        yield* Effect.sleep("3 millis")
      }
      const pages: Array<ReadonlyArray<string>> = []
      let token = ""
      do {
        const page = yield* logic.getSessionList("alice", { limit: 0n, pageToken: token })
        pages.push(page.sessions.map((session) => session.sessionId))
        token = page.nextPageToken
      } while (token !== "")
      expect(pages.map((page) => page.length)).toEqual([3, 3, 2])
      const all = pages.flat()
      expect(new Set(all).size).toBe(8)
      expect(all.slice(0, 7)).toEqual([...others].reverse().map((other) => `single:alice:${other}`))
      expect(all[7]).toBe("0")
      // A smaller limit is honoured, a larger one capped at the page size.
      expect((yield* logic.getSessionList("alice", { limit: 2n, pageToken: "" })).sessions).toHaveLength(2)
      expect((yield* logic.getSessionList("alice", { limit: 500n, pageToken: "" })).sessions).toHaveLength(3)
      expect((yield* failure(logic.getSessionList("alice", { limit: 0n, pageToken: "garbage" }))).code).toBe("invalid_argument")
    }))

  it.scopedLive("history and inbox pages stop at limits.max_page_bytes, and paging on reaches the rest", () =>
    Effect.gen(function*() {
      const { logic } = yield* fixture({ maxPageBytes: 3_000 })
      yield* registerAll(logic, "alice", "bob")
      const id = yield* logic.createSession({ creatorUsername: "alice", members: ["bob"], name: "", type: 1 })
      for (let i = 0; i < 6; i++) yield* logic.sendMessage(chat(id, "alice", `${i}`.repeat(1_000)))
      const newest = yield* logic.getHistoryMessages({ username: "bob", sessionId: id, limit: 50n, beforeSeq: 0n })
      expect(newest.map((m) => m.content[0])).toEqual(["4", "5"])
      const older = yield* logic.getHistoryMessages({ username: "bob", sessionId: id, limit: 50n, beforeSeq: newest[0]!.seqId })
      expect(older.map((m) => m.content[0])).toEqual(["2", "3"])

      const first = yield* logic.pullInboxDelta({ username: "bob", cursorId: 0n, limit: 100n })
      expect(first.hasMore).toBe(true)
      const contents: Array<string> = first.events.map((event) => event.message!.content)
      let cursor = first.nextCursorId
      for (let more = first.hasMore; more;) {
        const page = yield* logic.pullInboxDelta({ username: "bob", cursorId: cursor, limit: 100n })
        contents.push(...page.events.map((event) => event.message!.content))
        cursor = page.nextCursorId
        more = page.hasMore
      }
      expect(contents.filter((content) => content.length === 1_000).map((content) => content[0])).toEqual(["0", "1", "2", "3", "4", "5"])
      // One message larger than the budget still comes, alone.
      yield* logic.sendMessage(chat(id, "alice", "x".repeat(5_000)))
      const big = yield* logic.getHistoryMessages({ username: "bob", sessionId: id, limit: 50n, beforeSeq: 0n })
      expect(big.map((m) => m.content.length)).toEqual([5_000])
    }))

  it.scopedLive("a group is capped at limits.max_group_members, its creator included", () =>
    Effect.gen(function*() {
      const { logic } = yield* fixture({ maxGroupMembers: 3 })
      yield* registerAll(logic, "alice", "bob", "carol", "dave")
      expect(yield* logic.createSession({ creatorUsername: "alice", members: ["bob", "carol"], name: "Three", type: 2 })).toMatch(/^group:/)
      const error = yield* failure(logic.createSession({ creatorUsername: "alice", members: ["bob", "carol", "dave"], name: "Four", type: 2 }))
      expect(error).toMatchObject({ code: "invalid_argument", message: "a group may have at most 3 members" })
    }))
})
