import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { Committed } from "../../src/application/Committed.js"
import { ConnectionHub } from "../../src/application/ConnectionHub.js"
import { PushDelivery } from "../../src/application/PushDelivery.js"
import type { PushMessage } from "../../src/domain/Model.js"
import { WsPacket } from "../../src/gen/gateway/v1/packet.js"
import { testCore } from "../support/gateway.js"
import { fakeConnection, recordingMetrics } from "../support/helpers.js"

const message: PushMessage = {
  msgId: 7318624519394279425n,
  seqId: 3n,
  sessionId: "single:a:b",
  fromUsername: "a",
  toUsername: "b",
  content: "hi",
  type: "text",
  timestamp: 1700000000n,
  sessionMeta: { name: "a", type: 1 }
}

describe("PushDelivery", () => {
  it.effect("writes the same encoded bytes to every device of every target", () =>
    Effect.gen(function*() {
      const hub = yield* ConnectionHub
      const push = yield* PushDelivery
      const b1 = fakeConnection("b")
      const b2 = fakeConnection("b")
      const c = fakeConnection("c")
      for (const conn of [b1, b2, c]) hub.add(conn)
      const report = yield* push.deliver(["b", "c"], message)
      expect(report).toEqual({ failedUsernames: [], delivered: 3 })
      expect(b1.frames[0]).toBe(b2.frames[0])
      expect(b1.frames[0]).toBe(c.frames[0])
      const packet = b1.packets()[0]!
      expect(packet.payload).toEqual({ $case: "push", value: message })
    }).pipe(Effect.provide(testCore())))

  it.effect("reports users with no connection here", () =>
    Effect.gen(function*() {
      const hub = yield* ConnectionHub
      const push = yield* PushDelivery
      hub.add(fakeConnection("b"))
      const report = yield* push.deliver(["b", "ghost", "nobody"], message)
      expect(report.failedUsernames).toEqual(["ghost", "nobody"])
      expect(report.delivered).toBe(1)
    }).pipe(Effect.provide(testCore())))

  it.effect("a user whose every write fails is failed; one good device is enough", () =>
    Effect.gen(function*() {
      const hub = yield* ConnectionHub
      const push = yield* PushDelivery
      const stuck = fakeConnection("b")
      stuck.accept = false
      const c1 = fakeConnection("c")
      c1.accept = false
      const c2 = fakeConnection("c")
      for (const conn of [stuck, c1, c2]) hub.add(conn)
      const report = yield* push.deliver(["b", "c"], message)
      expect(report.failedUsernames).toEqual(["b"])
      expect(c2.frames).toHaveLength(1)
    }).pipe(Effect.provide(testCore())))

  it.effect("layerCommitted pushes what a Logic offers to Committed, in order, once the turn that offered it is done", () =>
    Effect.gen(function*() {
      const hub = yield* ConnectionHub
      const committed = yield* Committed
      const b = fakeConnection("b")
      const c = fakeConnection("c")
      hub.add(b)
      hub.add(c)
      committed.offer(["b"], { ...message, msgId: 1n })
      committed.offer(["b", "c"], { ...message, msgId: 2n })
      // What the turn writes after offering (its acks) goes first.
      b.send(WsPacket.encode({ seq: "ack", payload: { $case: "pulse", value: {} } }).finish())
      expect(b.frames).toHaveLength(1)
      yield* Effect.promise(() => new Promise<void>((resolve) => setImmediate(resolve)))
      const seen = (connection: typeof b) =>
        connection.packets().map((p) => (p.payload?.$case === "push" ? p.payload.value.msgId : p.seq))
      expect(seen(b)).toEqual(["ack", 1n, 2n])
      expect(seen(c)).toEqual([2n])
    }).pipe(Effect.provide(testCore())))

  it.effect("counts sent frames, failed users and latency", () => {
    const recorder = recordingMetrics()
    return Effect.gen(function*() {
      const hub = yield* ConnectionHub
      const push = yield* PushDelivery
      hub.add(fakeConnection("b"))
      yield* push.deliver(["b", "ghost"], message)
      expect(recorder.events.find((e) => e.name === "messagesSent")?.args).toEqual([1])
      expect(recorder.events.find((e) => e.name === "pushFailed")?.args).toEqual([1])
      expect(recorder.count("pushDuration")).toBe(1)
    }).pipe(Effect.provide(testCore({ metrics: recorder.shape })))
  })
})
