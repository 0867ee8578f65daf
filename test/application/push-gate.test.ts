import { describe, expect, it } from "@effect/vitest"
import { Deferred, Effect, Either, Layer, TestClock } from "effect"
import { Committed } from "../../src/application/Committed.js"
import { ConnectionHub, ConnectionRegistry, GateOutcome } from "../../src/application/ConnectionHub.js"
import { Dispatcher } from "../../src/application/Dispatcher.js"
import type { DispatcherOptions } from "../../src/application/Dispatcher.js"
import { ConnectionPushGate, defaultPushGateLimits } from "../../src/application/Dispatcher/PushGate.js"
import { PushDelivery } from "../../src/application/PushDelivery.js"
import type { LogicShape } from "../../src/application/ports/Logic.js"
import { Logic, withDefaults } from "../../src/application/ports/Logic.js"
import { logicError } from "../../src/domain/Errors.js"
import type { PushMessage, SendMessageResult } from "../../src/domain/Model.js"
import { WsPacket } from "../../src/gen/gateway/v1/packet.js"
import { testCore } from "../support/gateway.js"
import type { FakeConnection } from "../support/helpers.js"
import { fakeConnection } from "../support/helpers.js"

/** Lets queued work run: the chats of a turn are sent on the next macrotask, then fibers finish. */
const settle = Effect.repeatN(
  Effect.zipRight(Effect.promise(() => new Promise<void>((resolve) => setImmediate(resolve))), Effect.repeatN(Effect.yieldNow(), 20)),
  3
)

const chatFrame = (seq: string, content = "hello") =>
  WsPacket.encode({
    seq,
    payload: {
      $case: "chat",
      value: { sessionId: "single:alice:bob", fromUsername: "", toUsername: "bob", content, type: "text", timestamp: 0n }
    }
  }).finish()

const pushOf = (msgId: bigint, fromUsername: string): PushMessage => ({
  msgId,
  seqId: msgId,
  sessionId: "single:alice:bob",
  fromUsername,
  toUsername: fromUsername === "alice" ? "bob" : "alice",
  content: `message ${msgId}`,
  type: "text",
  timestamp: 1_700_000_000n,
  sessionMeta: { name: "a", type: 1 }
})

/** What a client sees, in order: `ack <seq> <msg_id>` and `push <msg_id>`. */
const seen = (connection: FakeConnection) =>
  connection.packets().map((packet) =>
    packet.payload?.$case === "ack"
      ? `ack ${packet.seq} ${packet.payload.value.msgId}${packet.payload.value.error === "" ? "" : " error"}`
      : packet.payload?.$case === "push"
      ? `push ${packet.payload.value.msgId}`
      : packet.payload?.$case
  )

/**
 * A Logic whose chats are answered when the test says: `answer(result)` settles the oldest chat
 * waiting, with a msg_id or a failure.
 */
const controlledLogic = () => {
  const waiting: Array<Deferred.Deferred<SendMessageResult, ReturnType<typeof logicError>>> = []
  const logic: Partial<LogicShape> = {
    sendMessage: () =>
      Effect.flatMap(Deferred.make<SendMessageResult, ReturnType<typeof logicError>>(), (answer) => {
        waiting.push(answer)
        return Deferred.await(answer)
      })
  }
  const answer = (result: Either.Either<SendMessageResult, ReturnType<typeof logicError>>) =>
    Effect.zipRight(
      Either.match(result, {
        onLeft: (error) => Deferred.fail(waiting.shift()!, error),
        onRight: (value) => Deferred.succeed(waiting.shift()!, value)
      }),
      settle
    )
  return { logic, answer, waiting: () => waiting.length }
}

const harness = (dispatcher: DispatcherOptions = {}) => {
  const control = controlledLogic()
  const layer = testCore({ logic: control.logic, overrides: { dispatcher } })
  const setup = Effect.gen(function*() {
    const phone = fakeConnection("alice")
    const laptop = fakeConnection("alice")
    const bob = fakeConnection("bob")
    const dispatch = yield* Dispatcher
    const phoneSession = yield* dispatch.attach(phone)
    yield* dispatch.attach(laptop)
    yield* dispatch.attach(bob)
    const delivery = yield* PushDelivery
    const hub = yield* ConnectionHub
    /** A message as Logic pushes it: to both members of the direct session. */
    const push = (msgId: bigint, from: string) => delivery.deliverNow(["alice", "bob"], pushOf(msgId, from))
    return { phone, laptop, bob, phoneSession, push, hub }
  })
  return { control, layer, setup }
}

describe("a connection's own pushes while its chats are answered", () => {
  it.scoped("an echo that comes before the ack is held and dropped; the other pushes follow the ack in order", () => {
    const h = harness()
    return Effect.gen(function*() {
      const { phone, laptop, bob, phoneSession, push } = yield* h.setup
      phoneSession.receive(chatFrame("c-1"))
      yield* settle
      expect(h.control.waiting()).toBe(1)

      push(41n, "bob")
      const echoReport = push(42n, "alice")
      push(43n, "bob")
      // Nothing reaches the sending socket before its ack; the sender's other device and the peer get everything now.
      expect(phone.frames).toHaveLength(0)
      expect(seen(laptop)).toEqual(["push 41", "push 42", "push 43"])
      expect(seen(bob)).toEqual(["push 41", "push 42", "push 43"])
      expect(echoReport.failedUsernames).toEqual([])

      yield* h.control.answer(Either.right({ msgId: 42n, seqId: 7n }))
      expect(seen(phone)).toEqual(["ack c-1 42", "push 41", "push 43"])
      // The held push is written as encoded once for every recipient.
      expect(phone.frames[1]).toBe(laptop.frames[0])
    }).pipe(Effect.provide(h.layer))
  })

  it.scoped("the same with a span and a fiber per chat (trace_chats)", () => {
    const h = harness({ traceChats: true })
    return Effect.gen(function*() {
      const { phone, phoneSession, push } = yield* h.setup
      phoneSession.receive(chatFrame("c-1"))
      yield* settle
      push(42n, "alice")
      push(43n, "bob")
      expect(phone.frames).toHaveLength(0)
      yield* h.control.answer(Either.right({ msgId: 42n, seqId: 7n }))
      expect(seen(phone)).toEqual(["ack c-1 42", "push 43"])
    }).pipe(Effect.provide(h.layer))
  })

  it.scoped("an echo that comes after the ack is dropped too; the sender's other device still gets it", () => {
    const h = harness()
    return Effect.gen(function*() {
      const { phone, laptop, phoneSession, push } = yield* h.setup
      phoneSession.receive(chatFrame("c-1"))
      yield* settle
      yield* h.control.answer(Either.right({ msgId: 42n, seqId: 7n }))
      push(42n, "alice")
      push(44n, "bob")
      expect(seen(phone)).toEqual(["ack c-1 42", "push 44"])
      expect(seen(laptop)).toEqual(["push 42", "push 44"])
    }).pipe(Effect.provide(h.layer))
  })

  it.scoped("a user reached only by their own echo is not reported failed", () => {
    const h = harness()
    return Effect.gen(function*() {
      const { phone, laptop, phoneSession, hub } = yield* h.setup
      hub.remove(laptop)
      phoneSession.receive(chatFrame("c-1"))
      yield* settle
      yield* h.control.answer(Either.right({ msgId: 42n, seqId: 7n }))
      const delivery = yield* PushDelivery
      expect(delivery.deliverNow(["alice"], pushOf(42n, "alice"))).toEqual({ failedUsernames: [], delivered: 0 })
      phone.accept = false
      expect(delivery.deliverNow(["alice"], pushOf(43n, "bob"))).toEqual({ failedUsernames: ["alice"], delivered: 0 })
    }).pipe(Effect.provide(h.layer))
  })

  it.scoped("the same msg_id from another user, or another msg_id from the sender, is not an echo", () => {
    const h = harness()
    return Effect.gen(function*() {
      const { phone, phoneSession, push } = yield* h.setup
      phoneSession.receive(chatFrame("c-1"))
      yield* settle
      push(42n, "bob")
      push(45n, "alice")
      yield* h.control.answer(Either.right({ msgId: 42n, seqId: 7n }))
      push(46n, "alice")
      expect(seen(phone)).toEqual(["ack c-1 42", "push 42", "push 45", "push 46"])
    }).pipe(Effect.provide(h.layer))
  })

  it.scoped("a chat that fails releases what was held, after its error ack", () => {
    const h = harness()
    return Effect.gen(function*() {
      const { phone, phoneSession, push } = yield* h.setup
      phoneSession.receive(chatFrame("c-1"))
      yield* settle
      push(41n, "bob")
      yield* h.control.answer(Either.left(logicError("permission_denied", "not a session member")))
      expect(seen(phone)).toEqual(["ack c-1 0 error", "push 41"])
    }).pipe(Effect.provide(h.layer))
  })

  it.scoped("a chat Logic never answers holds the pushes only until its deadline", () => {
    const h = harness({ chatTimeout: "2 seconds" })
    return Effect.gen(function*() {
      const { phone, phoneSession, push } = yield* h.setup
      phoneSession.receive(chatFrame("c-1"))
      yield* settle
      push(41n, "bob")
      yield* TestClock.adjust("1 second")
      yield* settle
      expect(phone.frames).toHaveLength(0)
      yield* TestClock.adjust("1 second")
      yield* settle
      expect(seen(phone)).toEqual(["ack c-1 0 error", "push 41"])
    }).pipe(Effect.provide(h.layer))
  })

  it.scoped("past max_held_pushes what waits is written at once, in order", () => {
    const h = harness({ maxHeldPushes: 2 })
    return Effect.gen(function*() {
      const { phone, phoneSession, push } = yield* h.setup
      phoneSession.receive(chatFrame("c-1"))
      yield* settle
      push(41n, "bob")
      push(42n, "bob")
      expect(phone.frames).toHaveLength(0)
      push(43n, "bob")
      expect(seen(phone)).toEqual(["push 41", "push 42", "push 43"])
      push(44n, "bob")
      yield* h.control.answer(Either.right({ msgId: 50n, seqId: 9n }))
      push(50n, "alice")
      expect(seen(phone)).toEqual(["push 41", "push 42", "push 43", "push 44", "ack c-1 50"])
    }).pipe(Effect.provide(h.layer))
  })

  it.scoped("past max_held_push_bytes too", () => {
    const frameBytes = WsPacket.encode({ seq: "", payload: { $case: "push", value: pushOf(41n, "bob") } }).finish().byteLength
    const h = harness({ maxHeldPushBytes: frameBytes + 1 })
    return Effect.gen(function*() {
      const { phone, phoneSession, push } = yield* h.setup
      phoneSession.receive(chatFrame("c-1"))
      yield* settle
      push(41n, "bob")
      expect(phone.frames).toHaveLength(0)
      push(42n, "bob")
      expect(seen(phone)).toEqual(["push 41", "push 42"])
    }).pipe(Effect.provide(h.layer))
  })

  it.scoped("acked msg_ids are remembered up to echo_memory of them, for echo_memory_time", () => {
    const h = harness({ echoMemory: 2, echoMemoryTime: "10 seconds" })
    return Effect.gen(function*() {
      const { phone, phoneSession, push } = yield* h.setup
      for (const msgId of [1n, 2n, 3n]) {
        phoneSession.receive(chatFrame(`c-${msgId}`))
        yield* settle
        yield* h.control.answer(Either.right({ msgId, seqId: msgId }))
      }
      push(1n, "alice")
      push(2n, "alice")
      push(3n, "alice")
      yield* TestClock.adjust("10 seconds")
      push(3n, "alice")
      expect(seen(phone)).toEqual(["ack c-1 1", "ack c-2 2", "ack c-3 3", "push 1", "push 3"])
    }).pipe(Effect.provide(h.layer))
  })

  it.scoped("only a connection with a chat in flight or msg_ids to remember is gated; a closed one is not", () => {
    const h = harness({ echoMemoryTime: "10 seconds" })
    return Effect.gen(function*() {
      const { phoneSession, push, hub } = yield* h.setup
      expect(hub.activeGates()).toBeUndefined()
      phoneSession.receive(chatFrame("c-1"))
      yield* settle
      expect(hub.activeGates()?.size).toBe(1)
      yield* h.control.answer(Either.right({ msgId: 42n, seqId: 7n }))
      expect(hub.activeGates()?.size).toBe(1)
      yield* TestClock.adjust("10 seconds")
      // The next push finds nothing left to remember and takes the gate away.
      push(43n, "bob")
      expect(hub.activeGates()).toBeUndefined()

      phoneSession.receive(chatFrame("c-2"))
      yield* settle
      push(44n, "bob")
      phoneSession.close()
      expect(hub.activeGates()).toBeUndefined()
      yield* h.control.answer(Either.right({ msgId: 45n, seqId: 8n }))
      expect(hub.activeGates()).toBeUndefined()
    }).pipe(Effect.provide(h.layer))
  })

  it.scoped("a failed chat with nothing remembered leaves no gate behind", () => {
    const h = harness()
    return Effect.gen(function*() {
      const { phoneSession, hub } = yield* h.setup
      phoneSession.receive(chatFrame("c-1"))
      yield* settle
      yield* h.control.answer(Either.left(logicError("unavailable", "logic down")))
      expect(hub.activeGates()).toBeUndefined()
    }).pipe(Effect.provide(h.layer))
  })
})

describe("the sender's echo when Logic commits in-process", () => {
  /** A Logic shaped like the embedded one: a turn's chats in one call, each message offered to Committed once stored. */
  const committingLogic = Layer.effect(
    Logic,
    Effect.map(Committed, (committed) =>
      withDefaults({
        syncStatus: () => Effect.void,
        batchesChats: true,
        sendMessages: (items) =>
          Effect.sync(() =>
            items.map((item, i) => {
              const msgId = 50n + BigInt(i)
              committed.offer(["alice", "bob"], { ...pushOf(msgId, item.chat.fromUsername), content: item.chat.content })
              return Either.right({ msgId, seqId: msgId })
            })
          )
      }))
  )
  const layer = testCore({ logicLayer: committingLogic })

  it.scoped("is dropped by the gate as with a Task service: the sending socket gets its ack only, its other device and the peer the push", () =>
    Effect.gen(function*() {
      const dispatch = yield* Dispatcher
      const phone = fakeConnection("alice")
      const laptop = fakeConnection("alice")
      const bob = fakeConnection("bob")
      const phoneSession = yield* dispatch.attach(phone)
      yield* dispatch.attach(laptop)
      yield* dispatch.attach(bob)
      phoneSession.receive(chatFrame("c-1", "from the phone"))
      yield* settle
      expect(seen(phone)).toEqual(["ack c-1 50"])
      expect(seen(laptop)).toEqual(["push 50"])
      expect(seen(bob)).toEqual(["push 50"])
    }).pipe(Effect.provide(layer)))
})

describe("the push frame", () => {
  it.effect("is not encoded for a connection that would drop it as its own echo", () =>
    Effect.gen(function*() {
      const clock = yield* Effect.clock
      const phone = fakeConnection("alice")
      const gate = new ConnectionPushGate(phone, new ConnectionRegistry(), clock, defaultPushGateLimits)
      gate.hold()
      gate.answered(42n)
      let encoded = 0
      const frameOf = () => {
        encoded++
        return new Uint8Array([encoded])
      }
      expect(gate.offer(frameOf, pushOf(42n, "alice"))).toBe(GateOutcome.Echo)
      expect(encoded).toBe(0)
      expect(phone.frames).toHaveLength(0)
      // Anything else is encoded when written: held behind a chat in flight, or sent at once.
      expect(gate.offer(frameOf, pushOf(43n, "bob"))).toBe(GateOutcome.Sent)
      gate.hold()
      expect(gate.offer(frameOf, pushOf(44n, "bob"))).toBe(GateOutcome.Held)
      expect(encoded).toBe(2)
      gate.answered(45n)
      expect(phone.frames.map((frame) => frame[0])).toEqual([1, 2])
    }))
})
