import { describe, expect, it } from "@effect/vitest"
import { Deferred, Effect, Either, Exit, Fiber, Layer, Scope, TestClock } from "effect"
import type { Duration } from "effect"
import { ConnectionHub } from "../../src/application/ConnectionHub.js"
import { Dispatcher } from "../../src/application/Dispatcher.js"
import { PresenceBatcher } from "../../src/application/PresenceBatcher.js"
import type { ChatOrigin } from "../../src/application/ports/Logic.js"
import { CloseCodes } from "../../src/domain/Connection.js"
import type { LogicError } from "../../src/domain/Errors.js"
import { logicError } from "../../src/domain/Errors.js"
import type { ChatRequest, PresenceBatch, SendMessageResult } from "../../src/domain/Model.js"
import { WsPacket } from "../../src/gen/gateway/v1/packet.js"
import type { TestGatewayOptions } from "../support/gateway.js"
import { testCore } from "../support/gateway.js"
import { fakeConnection, recordingMetrics } from "../support/helpers.js"

/** Lets queued work run: the chats of a turn are sent on the next macrotask, then fibers finish. */
const settle = Effect.repeatN(
  Effect.zipRight(Effect.promise(() => new Promise<void>((resolve) => setImmediate(resolve))), Effect.repeatN(Effect.yieldNow(), 20)),
  3
)

const chatFrame = (seq: string, overrides: Partial<ChatRequest> = {}) =>
  WsPacket.encode({
    seq,
    payload: {
      $case: "chat",
      value: {
        sessionId: "single:alice:bob",
        fromUsername: "mallory",
        toUsername: "bob",
        content: "hello",
        type: "text",
        timestamp: 0n,
        ...overrides
      }
    }
  }).finish()

const pulseFrame = (seq: string) => WsPacket.encode({ seq, payload: { $case: "pulse", value: {} } }).finish()

const acks = (packets: ReadonlyArray<WsPacket>) =>
  packets.flatMap((p) => (p.payload?.$case === "ack" ? [{ seq: p.seq, ...p.payload.value }] : []))

const withCore = (options: TestGatewayOptions) => Effect.provide(testCore(options))

/**
 * An in-process Logic (`sendMessagesNow`) that answers a batch only when the test says so:
 * `answers[k]()` answers the k-th batch, its i-th chat with `answer(i)`.
 */
const heldPlainLogic = (
  chatTimeout: Duration.DurationInput,
  answer: (index: number) => Either.Either<SendMessageResult, LogicError>
) => {
  const answers: Array<() => void> = []
  const core = withCore({
    overrides: { dispatcher: { chatTimeout } },
    logic: {
      batchesChats: true,
      sendMessagesNow: (items, done) => {
        answers.push(() => done(items.map((_, i) => answer(i))))
      }
    }
  })
  return { answers, core }
}

/**
 * Two users send a chat each in one turn, to a Logic that fails the batch by a bug: every chat is
 * acked "internal error", and each connection goes on (its next frame is answered).
 */
const chatsOfABrokenBatch = Effect.gen(function*() {
  const dispatcher = yield* Dispatcher
  const users = ["alice", "bob"].map((name) => fakeConnection(name))
  const handles = yield* Effect.forEach(users, (user) => dispatcher.attach(user))
  handles.forEach((handle, i) => handle.receive(chatFrame(`c${i}`)))
  yield* settle
  for (const user of users) expect(acks(user.packets())).toMatchObject([{ error: "internal error" }])
  handles.forEach((handle, i) => handle.receive(pulseFrame(`after${i}`)))
  users.forEach((user, i) => expect(user.packets().at(-1)?.seq).toBe(`after${i}`))
})

describe("Dispatcher", () => {
  it.scoped("answers a pulse with a pulse", () => {
    const recorder = recordingMetrics()
    return Effect.gen(function*() {
      const dispatcher = yield* Dispatcher
      const conn = fakeConnection("alice")
      const handle = yield* dispatcher.attach(conn)
      handle.receive(pulseFrame("p-1"))
      yield* settle
      expect(conn.packets()).toEqual([{ seq: "p-1", payload: { $case: "pulse", value: {} } }])
      expect(recorder.count("pulse")).toBe(1)
    }).pipe(withCore({ metrics: recorder.shape }))
  })

  it.scoped("forwards a chat as the authenticated user and acks with ids", () => {
    const received: Array<[ChatRequest, ChatOrigin | undefined]> = []
    return Effect.gen(function*() {
      yield* TestClock.setTime(1_700_000_123_456)
      const dispatcher = yield* Dispatcher
      const conn = fakeConnection("alice")
      const handle = yield* dispatcher.attach(conn)
      handle.receive(chatFrame("c-1"))
      yield* settle
      expect(received).toHaveLength(1)
      const [chat, origin] = received[0]!
      expect(chat.fromUsername).toBe("alice")
      expect(chat.timestamp).toBe(1_700_000_123n)
      // The key names this send across retries: this connection, this seq, this boot. The socket
      // itself is none of Logic's business.
      expect(origin?.idempotencyKey).toMatch(new RegExp(`^[0-9a-z-]+:${conn.info.id}:c-1$`))
      expect(origin).not.toHaveProperty("connectionId")
      expect(acks(conn.packets())).toEqual([
        { seq: "c-1", refSeq: "c-1", msgId: 42n, seqId: 7n, sessionId: "single:alice:bob", error: "" }
      ])
    }).pipe(
      withCore({
        logic: {
          sendMessage: (chat, origin) =>
            Effect.sync(() => {
              received.push([chat, origin])
              return { msgId: 42n, seqId: 7n }
            })
        }
      })
    )
  })

  it.scoped("acks a business refusal with its message", () =>
    Effect.gen(function*() {
      const dispatcher = yield* Dispatcher
      const conn = fakeConnection("alice")
      const handle = yield* dispatcher.attach(conn)
      handle.receive(chatFrame("c-2"))
      yield* settle
      expect(acks(conn.packets())[0]).toMatchObject({ refSeq: "c-2", error: "not a session member", msgId: 0n })
    }).pipe(
      withCore({ logic: { sendMessage: () => Effect.fail(logicError("permission_denied", "not a session member")) } })
    ))

  it.scoped("acks with an error when Logic is down", () =>
    Effect.gen(function*() {
      const dispatcher = yield* Dispatcher
      const conn = fakeConnection("alice")
      const handle = yield* dispatcher.attach(conn)
      handle.receive(chatFrame("c-3"))
      yield* settle
      expect(acks(conn.packets())[0]!.error).toBe("logic service is unavailable")
    }).pipe(withCore({})))

  it.scoped("acks with a deadline error when Logic does not answer in time", () =>
    Effect.gen(function*() {
      const dispatcher = yield* Dispatcher
      const conn = fakeConnection("alice")
      const handle = yield* dispatcher.attach(conn)
      handle.receive(chatFrame("slow"))
      yield* settle
      expect(conn.frames).toHaveLength(0)
      yield* TestClock.adjust("2 seconds")
      yield* settle
      expect(acks(conn.packets())[0]).toMatchObject({ refSeq: "slow", error: "logic did not answer in time" })
    }).pipe(withCore({ overrides: { dispatcher: { chatTimeout: "2 seconds" } }, logic: { sendMessage: () => Effect.never } })))

  it.scoped("handles frames of one connection in arrival order", () => {
    let call = 0
    return Effect.gen(function*() {
      const dispatcher = yield* Dispatcher
      const conn = fakeConnection("alice")
      const handle = yield* dispatcher.attach(conn)
      handle.receive(chatFrame("first"))
      handle.receive(pulseFrame("second"))
      handle.receive(chatFrame("third"))
      yield* settle
      yield* TestClock.adjust("1 second")
      yield* settle
      expect(conn.packets().map((p) => p.seq)).toEqual(["first", "second", "third"])
      expect(acks(conn.packets()).map((a) => a.msgId)).toEqual([1n, 2n])
    }).pipe(
      withCore({
        logic: {
          // The first call is slow: a concurrent design would answer "third" before "first".
          sendMessage: () =>
            Effect.suspend(() => {
              const n = ++call
              return Effect.as(n === 1 ? Effect.sleep("500 millis") : Effect.void, { msgId: BigInt(n), seqId: 1n })
            })
        }
      })
    )
  })

  it.scoped("a Logic that commits chats together gets the chats of one turn in one call; each is acked with its own result", () => {
    const batches: Array<ReadonlyArray<string>> = []
    return Effect.gen(function*() {
      const dispatcher = yield* Dispatcher
      const users = ["alice", "bob", "carol"].map((name) => fakeConnection(name))
      const handles = yield* Effect.forEach(users, (user) => dispatcher.attach(user))
      handles.forEach((handle, i) => handle.receive(chatFrame(`b${i}`, { content: `from ${i}` })))
      // Collected for the turn: nothing has gone to Logic yet.
      expect(batches).toEqual([])
      yield* settle
      expect(batches).toEqual([["from 0", "from 1", "from 2"]])
      expect(acks(users[0]!.packets())).toMatchObject([{ seq: "b0", msgId: 100n, error: "" }])
      expect(acks(users[1]!.packets())).toMatchObject([{ seq: "b1", msgId: 0n, error: "not a session member" }])
      expect(acks(users[2]!.packets())).toMatchObject([{ seq: "b2", msgId: 102n, error: "" }])
    }).pipe(
      withCore({
        logic: {
          batchesChats: true,
          sendMessages: (items) =>
            Effect.sync(() => {
              batches.push(items.map((item) => item.chat.content))
              return items.map((_, i) =>
                i === 1
                  ? Either.left(logicError("permission_denied", "not a session member"))
                  : Either.right({ msgId: BigInt(100 + i), seqId: 1n })
              )
            })
        }
      })
    )
  })

  it.scoped("a batch that dies is acked with an error for every chat in it, and the connections go on", () =>
    chatsOfABrokenBatch.pipe(withCore({ logic: { batchesChats: true, sendMessages: () => Effect.dieMessage("a bug in Logic") } })))

  it.scoped("an in-process Logic takes a turn's chats plainly (sendMessagesNow); each is acked when it answers, with its own result", () => {
    const batches: Array<ReadonlyArray<string>> = []
    const answers: Array<() => void> = []
    return Effect.gen(function*() {
      const dispatcher = yield* Dispatcher
      const users = ["alice", "bob", "carol"].map((name) => fakeConnection(name))
      const handles = yield* Effect.forEach(users, (user) => dispatcher.attach(user))
      handles.forEach((handle, i) => handle.receive(chatFrame(`n${i}`, { content: `from ${i}` })))
      yield* settle
      expect(batches).toEqual([["from 0", "from 1", "from 2"]])
      // Not durable yet: nobody is acked, and a pulse waits behind its connection's chat.
      handles[0]!.receive(pulseFrame("behind"))
      yield* settle
      for (const user of users) expect(user.frames).toHaveLength(0)
      answers[0]!()
      expect(users[0]!.packets().map((p) => p.seq)).toEqual(["n0", "behind"])
      expect(acks(users[0]!.packets())).toMatchObject([{ seq: "n0", msgId: 100n, error: "" }])
      expect(acks(users[1]!.packets())).toMatchObject([{ seq: "n1", msgId: 0n, error: "not a session member" }])
      expect(acks(users[2]!.packets())).toMatchObject([{ seq: "n2", msgId: 102n, error: "" }])
      // Answered once: a second call of `done` (a bug in Logic) acks nothing twice.
      answers[0]!()
      expect(acks(users[2]!.packets())).toHaveLength(1)
    }).pipe(
      withCore({
        overrides: { dispatcher: { chatTimeout: 0 } },
        logic: {
          batchesChats: true,
          sendMessages: () => Effect.dieMessage("the Effect form is not used when the plain one is there"),
          sendMessagesNow: (items, done) => {
            batches.push(items.map((item) => item.chat.content))
            answers.push(() =>
              done(items.map((_, i) =>
                i === 1
                  ? Either.left(logicError("permission_denied", "not a session member"))
                  : Either.right({ msgId: BigInt(100 + i), seqId: 1n })
              ))
            )
          }
        }
      })
    )
  })

  it.scoped("a plain batch that Logic does not answer within the chat timeout is acked with a deadline error, and its late answer is dropped", () => {
    const { answers, core } = heldPlainLogic("50 millis", () => Either.right({ msgId: 1n, seqId: 1n }))
    return Effect.gen(function*() {
      const dispatcher = yield* Dispatcher
      const conn = fakeConnection("alice")
      const handle = yield* dispatcher.attach(conn)
      handle.receive(chatFrame("late"))
      yield* settle
      expect(answers).toHaveLength(1)
      expect(conn.frames).toHaveLength(0)
      // The plain path's deadline is a timer of the event loop, not of the Effect clock.
      yield* Effect.promise(() => new Promise((resolve) => setTimeout(resolve, 120)))
      expect(acks(conn.packets())).toMatchObject([{ refSeq: "late", error: "logic did not answer in time" }])
      answers[0]!()
      handle.receive(pulseFrame("after"))
      expect(conn.packets().map((p) => p.seq)).toEqual(["late", "after"])
    }).pipe(core)
  })

  it.scoped("a chat timeout past setTimeout's range means none on the plain path: the chat waits for Logic's answer", () => {
    const { answers, core } = heldPlainLogic("30 days", () => Either.right({ msgId: 7n, seqId: 1n }))
    return Effect.gen(function*() {
      const dispatcher = yield* Dispatcher
      const conn = fakeConnection("alice")
      const handle = yield* dispatcher.attach(conn)
      handle.receive(chatFrame("patient"))
      yield* settle
      // Node fires a timer past 2^31-1 ms at once (after a warning): that would ack deadline_exceeded here.
      yield* Effect.promise(() => new Promise((resolve) => setTimeout(resolve, 60)))
      expect(conn.frames).toHaveLength(0)
      answers[0]!()
      expect(acks(conn.packets())).toMatchObject([{ refSeq: "patient", msgId: 7n, error: "" }])
    }).pipe(core)
  })

  it.scoped("a connection whose ack throws (a bug) keeps no other chat of its batch unanswered", () => {
    const { answers, core } = heldPlainLogic(0, (i) => Either.right({ msgId: BigInt(i + 1), seqId: 1n }))
    return Effect.gen(function*() {
      const dispatcher = yield* Dispatcher
      const users = ["alice", "bob", "carol"].map((name) => fakeConnection(name))
      const handles = yield* Effect.forEach(users, (user) => dispatcher.attach(user))
      handles.forEach((handle, i) => handle.receive(chatFrame(`x${i}`)))
      yield* settle
      Object.assign(users[0]!, {
        send: () => {
          throw new Error("a broken socket adapter")
        }
      })
      // Called from an I/O callback in production: nothing may escape it.
      expect(() => answers[0]!()).not.toThrow()
      expect(acks(users[1]!.packets())).toMatchObject([{ seq: "x1", error: "" }])
      expect(acks(users[2]!.packets())).toMatchObject([{ seq: "x2", error: "" }])
      // The broken connection's chat was settled too: its next frame is handled.
      handles[1]!.receive(pulseFrame("next"))
      expect(users[1]!.packets().at(-1)?.seq).toBe("next")
    }).pipe(core)
  })

  it.scoped("a plain batch Logic that throws has every chat of the batch acked with an error, and the connections go on", () =>
    chatsOfABrokenBatch.pipe(
      withCore({
        overrides: { dispatcher: { chatTimeout: 0 } },
        logic: {
          batchesChats: true,
          sendMessagesNow: () => {
            throw new Error("a bug in Logic")
          }
        }
      })
    ))

  it.scoped("a Logic whose chats are separate calls gets each chat in its own call, in the frame's own turn", () => {
    const calls: Array<string> = []
    return Effect.gen(function*() {
      const dispatcher = yield* Dispatcher
      const users = ["alice", "bob"].map((name) => fakeConnection(name))
      const handles = yield* Effect.forEach(users, (user) => dispatcher.attach(user))
      handles.forEach((handle, i) => handle.receive(chatFrame(`s${i}`, { content: `from ${i}` })))
      // No deferral: each call started as its frame was handled (with no outer deadline to race).
      expect(calls).toEqual(["from 0", "from 1"])
      yield* settle
      users.forEach((user, i) => expect(acks(user.packets())).toMatchObject([{ seq: `s${i}`, msgId: BigInt(i + 1), error: "" }]))
    }).pipe(
      withCore({
        overrides: { dispatcher: { chatTimeout: 0 } },
        logic: {
          sendMessage: (chat) =>
            Effect.sync(() => {
              calls.push(chat.content)
              return { msgId: BigInt(calls.length), seqId: 1n }
            })
        }
      })
    )
  })

  it.scoped("a slow Logic call on one connection does not block another", () => {
    const gate = Deferred.unsafeMake<void>(undefined as never)
    return Effect.gen(function*() {
      const dispatcher = yield* Dispatcher
      const slow = fakeConnection("alice")
      const fast = fakeConnection("bob")
      const slowHandle = yield* dispatcher.attach(slow)
      const fastHandle = yield* dispatcher.attach(fast)
      slowHandle.receive(chatFrame("blocked", { content: "wait" }))
      fastHandle.receive(chatFrame("quick"))
      yield* settle
      expect(acks(fast.packets())).toHaveLength(1)
      expect(slow.frames).toHaveLength(0)
      yield* Deferred.succeed(gate, undefined)
      yield* settle
      expect(acks(slow.packets())).toHaveLength(1)
    }).pipe(
      withCore({
        logic: {
          sendMessage: (chat) =>
            Effect.as(chat.content === "wait" ? Deferred.await(gate) : Effect.void, { msgId: 1n, seqId: 1n })
        }
      })
    )
  })

  it.scoped("closes with 1007 on a frame that is not a WsPacket", () =>
    Effect.gen(function*() {
      const dispatcher = yield* Dispatcher
      const conn = fakeConnection("alice")
      const handle = yield* dispatcher.attach(conn)
      handle.receive(new Uint8Array([0x0a, 0xff, 0xff, 0xff]))
      expect(conn.closes[0]?.code).toBe(CloseCodes.InvalidPayload)
    }).pipe(withCore({})))

  it.scoped("answers an unknown payload with an error ack when it has a seq, else closes 1003", () =>
    Effect.gen(function*() {
      const dispatcher = yield* Dispatcher
      const conn = fakeConnection("alice")
      const handle = yield* dispatcher.attach(conn)
      // seq "u1" plus field 20 (unknown to the contract)
      handle.receive(new Uint8Array([0x0a, 0x02, 0x75, 0x31, 0xa2, 0x01, 0x00]))
      expect(acks(conn.packets())[0]).toMatchObject({ refSeq: "u1", error: "unknown packet type" })
      handle.receive(new Uint8Array([0xa2, 0x01, 0x00]))
      expect(conn.closes[0]?.code).toBe(CloseCodes.UnsupportedData)
    }).pipe(withCore({})))

  it.scoped("takes a client's delivery ack without answering it", () =>
    Effect.gen(function*() {
      const dispatcher = yield* Dispatcher
      const conn = fakeConnection("alice")
      const handle = yield* dispatcher.attach(conn)
      handle.receive(
        WsPacket.encode({
          seq: "",
          payload: { $case: "ack", value: { refSeq: "123456789012345", msgId: 0n, seqId: 0n, sessionId: "", error: "" } }
        }).finish()
      )
      yield* settle
      expect(conn.frames).toHaveLength(0)
      expect(conn.closes).toHaveLength(0)
    }).pipe(withCore({})))

  it.scoped("pauses the socket's reads instead of queuing past the pending-frame budget, and resumes once drained", () => {
    let release: Deferred.Deferred<void> | undefined
    return Effect.gen(function*() {
      release = yield* Deferred.make<void>()
      const dispatcher = yield* Dispatcher
      const conn = fakeConnection("alice")
      const handle = yield* dispatcher.attach(conn)
      handle.receive(chatFrame("in-flight"))
      yield* settle
      handle.receive(pulseFrame("q1"))
      expect(conn.paused).toBe(false)
      handle.receive(pulseFrame("q2"))
      expect(conn.paused).toBe(true)
      expect(acks(conn.packets())).toEqual([])
      yield* Deferred.succeed(release, undefined)
      yield* settle
      expect(conn.packets().map((p) => p.seq)).toEqual(["in-flight", "q1", "q2"])
      expect(conn.paused).toBe(false)
      expect(conn.pauses).toBe(1)
    }).pipe(
      withCore({
        overrides: { dispatcher: { maxPendingFrames: 2, pulsesPerSecond: 0 } },
        logic: { sendMessage: () => Effect.as(Deferred.await(release!), { msgId: 1n, seqId: 1n }) }
      })
    )
  })

  it.scoped("counts the bytes waiting behind a chat: a few large frames pause the reads; far past it frames are refused", () =>
    Effect.gen(function*() {
      const dispatcher = yield* Dispatcher
      const conn = fakeConnection("alice")
      const handle = yield* dispatcher.attach(conn)
      handle.receive(chatFrame("in-flight"))
      yield* settle
      const big = (seq: string) => chatFrame(seq, { content: "x".repeat(600) })
      handle.receive(big("b1"))
      expect(conn.paused).toBe(false)
      handle.receive(big("b2"))
      expect(conn.paused).toBe(true)
      // Frames the socket had already read keep coming for a while: queued up to 4x the budget.
      for (let i = 3; i <= 8; i++) handle.receive(big(`b${i}`))
      const refused = acks(conn.packets()).filter((a) => a.error === "too many pending frames").map((a) => a.seq)
      expect(refused).toEqual(["b7", "b8"])
    }).pipe(
      withCore({
        overrides: { dispatcher: { maxPendingBytes: 1_000, messagesPerSecond: 0 } },
        logic: { sendMessage: () => Effect.never }
      })
    ))

  it.scoped("rate-limits chats per user across all devices and disconnects persistent abuse", () =>
    Effect.gen(function*() {
      const dispatcher = yield* Dispatcher
      const devices = Array.from({ length: 20 }, () => fakeConnection("alice"))
      const handles = yield* Effect.forEach(devices, (device) => dispatcher.attach(device))
      handles.forEach((handle, i) => handle.receive(chatFrame(`d${i}`)))
      yield* settle
      const all = devices.flatMap((device) => acks(device.packets()))
      expect(all.filter((a) => a.error === "")).toHaveLength(5)
      expect(all.filter((a) => a.error.startsWith("rate limited"))).toHaveLength(15)
      // Another user has a bucket of their own.
      const bob = fakeConnection("bob")
      const bobHandle = yield* dispatcher.attach(bob)
      bobHandle.receive(chatFrame("bob-1"))
      yield* settle
      expect(acks(bob.packets())).toMatchObject([{ seq: "bob-1", error: "" }])
      // One device that keeps going past the limit is cut off.
      for (let i = 0; i < 5; i++) handles[0]!.receive(chatFrame(`x${i}`))
      expect(devices[0]!.closes[0]?.code).toBe(CloseCodes.RateLimited)
    }).pipe(
      withCore({
        overrides: { dispatcher: { messagesPerSecond: 1, messageBurst: 5, maxRateViolations: 5 } },
        logic: { sendMessage: () => Effect.succeed({ msgId: 1n, seqId: 1n }) }
      })
    ))

  it.scoped("counts pulses too: a burst of 5,000 gets the burst answered and the connection closed", () =>
    Effect.gen(function*() {
      const dispatcher = yield* Dispatcher
      const conn = fakeConnection("alice")
      const handle = yield* dispatcher.attach(conn)
      for (let i = 0; i < 5_000 && conn.closes.length === 0; i++) handle.receive(pulseFrame(`p${i}`))
      expect(conn.packets().filter((p) => p.payload?.$case === "pulse")).toHaveLength(10)
      expect(conn.closes).toEqual([{ code: CloseCodes.RateLimited, reason: "too many messages" }])
    }).pipe(withCore({ overrides: { dispatcher: { pulsesPerSecond: 1, pulseBurst: 10, maxRateViolations: 20 } } })))

  it.scoped("counts delivery acks: past their budget they are dropped, and a flood closes the connection", () =>
    Effect.gen(function*() {
      const dispatcher = yield* Dispatcher
      const conn = fakeConnection("alice")
      const handle = yield* dispatcher.attach(conn)
      const ack = (n: number) =>
        WsPacket.encode({
          seq: "",
          payload: { $case: "ack", value: { refSeq: String(n), msgId: 0n, seqId: 0n, sessionId: "", error: "" } }
        }).finish()
      let sent = 0
      while (sent < 1_000 && conn.closes.length === 0) handle.receive(ack(++sent))
      // The burst of 50 is taken; the 20th refused ack in a row closes the connection.
      expect(sent).toBe(70)
      expect(conn.frames).toHaveLength(0)
      expect(conn.closes[0]?.code).toBe(CloseCodes.RateLimited)
    }).pipe(withCore({ overrides: { dispatcher: { acksPerSecond: 10, ackBurst: 50, maxRateViolations: 20 } } })))

  it.effect("registers devices in the hub and announces presence for the first and last only", () => {
    const batches: Array<PresenceBatch> = []
    return Effect.gen(function*() {
      const dispatcher = yield* Dispatcher
      const hub = yield* ConnectionHub
      const presence = yield* PresenceBatcher
      const phoneScope = yield* Scope.make()
      const laptopScope = yield* Scope.make()
      yield* Scope.extend(dispatcher.attach(fakeConnection("alice")), phoneScope)
      yield* Scope.extend(dispatcher.attach(fakeConnection("alice")), laptopScope)
      expect(hub.connectionsOf("alice")?.size).toBe(2)
      yield* Scope.close(phoneScope, Exit.void)
      expect(hub.connectionsOf("alice")?.size).toBe(1)
      yield* settle
      yield* TestClock.adjust("100 millis")
      yield* settle
      yield* Scope.close(laptopScope, Exit.void)
      yield* settle
      yield* TestClock.adjust("100 millis")
      yield* settle
      expect(hub.connectionsOf("alice")).toBeUndefined()
      expect(batches.flatMap((b) => b.onlineBatch.map((u) => u.username))).toEqual(["alice"])
      expect(batches.flatMap((b) => b.offlineBatch.map((u) => u.username))).toEqual(["alice"])
      expect(yield* presence.backlog).toBe(0)
    }).pipe(withCore({ logic: { syncStatus: (batch) => Effect.sync(() => void batches.push(batch)) } }))
  })

  it.scoped("closes a connection with 4001 when its token expires", () =>
    Effect.gen(function*() {
      const dispatcher = yield* Dispatcher
      const conn = fakeConnection("alice", { expiresAt: 60_000 })
      yield* dispatcher.attach(conn)
      yield* TestClock.adjust("59 seconds")
      expect(conn.closes).toHaveLength(0)
      yield* TestClock.adjust("1 second")
      yield* settle
      expect(conn.closes[0]).toEqual({ code: CloseCodes.TokenExpired, reason: "token expired" })
    }).pipe(withCore({})))

  it.scoped("drain answers chats already taken and acks a chat that arrives during it with an error", () =>
    Effect.gen(function*() {
      const dispatcher = yield* Dispatcher
      const conn = fakeConnection("alice")
      const handle = yield* dispatcher.attach(conn)
      handle.receive(chatFrame("pending-1"))
      handle.receive(chatFrame("pending-2"))
      const draining = yield* Effect.fork(handle.drain("5 seconds"))
      yield* Effect.yieldNow()
      handle.receive(chatFrame("late"))
      yield* TestClock.adjust("1 second")
      yield* Fiber.join(draining)
      const answered = acks(conn.packets())
      expect(answered.map((a) => a.refSeq).sort()).toEqual(["late", "pending-1", "pending-2"])
      expect(answered.find((a) => a.refSeq === "late")?.error).toContain("shutting down")
      expect(answered.filter((a) => a.refSeq !== "late").every((a) => a.error === "" && a.msgId === 1n)).toBe(true)
    }).pipe(
      withCore({ logic: { sendMessage: () => Effect.as(Effect.sleep("100 millis"), { msgId: 1n, seqId: 1n }) } })
    ))
})

void Layer
