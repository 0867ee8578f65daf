import { describe, expect, it } from "@effect/vitest"
import { Effect, Layer, PubSub, Schedule, Stream, TestClock } from "effect"
import type { PresenceBatcherOptions } from "../../src/application/PresenceBatcher.js"
import { ConnectionHub } from "../../src/application/ConnectionHub.js"
import { GatewayIdentity } from "../../src/application/ports/GatewayIdentity.js"
import { Logic } from "../../src/application/ports/Logic.js"
import { Metrics } from "../../src/application/ports/Metrics.js"
import { PresenceBatcher } from "../../src/application/PresenceBatcher.js"
import type { PresenceBatch } from "../../src/domain/Model.js"
import { logicError } from "../../src/domain/Errors.js"
import { fakeConnection } from "../support/helpers.js"

const settle = Effect.repeatN(Effect.yieldNow(), 50)

const harness = (
  options: {
    batchSize?: number
    failFirst?: number
    identity?: Layer.Layer<GatewayIdentity>
    batcher?: Partial<PresenceBatcherOptions>
  } = {}
) => {
  const batches: Array<PresenceBatch> = []
  let calls = 0
  const logic = Logic.layerTest({
    syncStatus: (batch) =>
      Effect.suspend(() => {
        calls++
        if (calls <= (options.failFirst ?? 0)) return Effect.fail(logicError("unavailable", "logic down"))
        batches.push(batch)
        return Effect.void
      })
  })
  const layer = PresenceBatcher.layer({
    batchSize: options.batchSize ?? 50,
    flushInterval: "100 millis",
    retry: Schedule.exponential("100 millis"),
    ...options.batcher
  }).pipe(
    Layer.provideMerge(
      Layer.mergeAll(logic, options.identity ?? GatewayIdentity.layer("gateway-service-007"), ConnectionHub.layer, Metrics.layerNoop)
    )
  )
  return { batches, layer, calls: () => calls }
}

const usernames = (batches: ReadonlyArray<PresenceBatch>) => batches.flatMap((b) => b.onlineBatch.map((u) => u.username))
const usernamesOf = (batch: PresenceBatch) => batch.onlineBatch.map((u) => u.username)

describe("PresenceBatcher", () => {
  it.effect("an online event finding the batcher idle leaves at once, alone", () => {
    const h = harness()
    return Effect.gen(function*() {
      const presence = yield* PresenceBatcher
      presence.online("alice", "10.0.0.1")
      yield* settle
      expect(h.batches.map((b) => [b.seqId, usernames([b])])).toEqual([[1n, ["alice"]]])
      // Idle again once flush_interval has passed since that batch.
      yield* TestClock.adjust("100 millis")
      presence.online("bob", "10.0.0.2")
      yield* settle
      expect(h.batches.map((b) => [b.seqId, usernames([b])])).toEqual([[1n, ["alice"]], [2n, ["bob"]]])
    }).pipe(Effect.provide(h.layer))
  })

  it.effect("offline events alone wait for the flush interval, idle or not", () => {
    const h = harness()
    return Effect.gen(function*() {
      const presence = yield* PresenceBatcher
      presence.offline("alice")
      yield* settle
      yield* TestClock.adjust("90 millis")
      yield* settle
      expect(h.batches).toHaveLength(0)
      yield* TestClock.adjust("10 millis")
      yield* settle
      expect(h.batches.map((b) => b.offlineBatch.map((u) => u.username))).toEqual([["alice"]])
    }).pipe(Effect.provide(h.layer))
  })

  it.effect("after a batch, events send nothing before the flush interval, then one folded batch", () => {
    const h = harness()
    return Effect.gen(function*() {
      const presence = yield* PresenceBatcher
      presence.online("first", "10.0.0.9")
      yield* settle
      h.batches.length = 0
      presence.online("alice", "10.0.0.1")
      presence.online("bob", "10.0.0.2")
      presence.offline("carol")
      yield* settle
      yield* TestClock.adjust("50 millis")
      expect(h.batches).toHaveLength(0)
      yield* TestClock.adjust("60 millis")
      yield* settle
      expect(h.batches).toHaveLength(1)
      const [batch] = h.batches
      expect(batch!.gatewayId).toBe("gateway-service-007")
      expect(batch!.seqId).toBe(2n)
      expect(batch!.onlineBatch.map((u) => [u.username, u.remoteIp])).toEqual([["alice", "10.0.0.1"], ["bob", "10.0.0.2"]])
      expect(batch!.offlineBatch.map((u) => u.username)).toEqual(["carol"])
    }).pipe(Effect.provide(h.layer))
  })

  it.effect("sends at once when batch_size events are waiting", () => {
    const h = harness({ batchSize: 3 })
    return Effect.gen(function*() {
      const presence = yield* PresenceBatcher
      presence.online("first", "ip")
      yield* settle
      presence.online("a", "ip")
      yield* settle
      presence.online("b", "ip")
      presence.online("c", "ip")
      yield* settle
      expect(h.batches).toHaveLength(2)
      expect(usernames(h.batches)).toEqual(["first", "a", "b", "c"])
    }).pipe(Effect.provide(h.layer))
  })

  it.effect("a batch that filled early does not cut the next one's flush interval short", () => {
    const h = harness({ batchSize: 3 })
    return Effect.gen(function*() {
      const presence = yield* PresenceBatcher
      presence.online("first", "ip")
      yield* settle
      // Under load: "a" starts a batch whose interval ends at 100 ms; it fills at 10 ms.
      presence.online("a", "ip")
      yield* settle
      yield* TestClock.adjust("10 millis")
      presence.online("b", "ip")
      presence.online("c", "ip")
      yield* settle
      expect(h.batches.map(usernamesOf)).toEqual([["first"], ["a", "b", "c"]])
      // "d" starts the next batch at 20 ms: it leaves at 120 ms, not at the first one's 100 ms.
      yield* TestClock.adjust("10 millis")
      presence.online("d", "ip")
      yield* settle
      yield* TestClock.adjust("85 millis")
      yield* settle
      expect(h.batches).toHaveLength(2)
      yield* TestClock.adjust("15 millis")
      yield* settle
      expect(h.batches.map(usernamesOf)).toEqual([["first"], ["a", "b", "c"], ["d"]])
    }).pipe(Effect.provide(h.layer))
  })

  it.effect("numbers batches with an increasing seq_id", () => {
    const h = harness({ batchSize: 2 })
    return Effect.gen(function*() {
      const presence = yield* PresenceBatcher
      for (const name of ["a", "b", "c", "d", "e"]) presence.online(name, "ip")
      yield* settle
      yield* TestClock.adjust("100 millis")
      yield* settle
      expect(h.batches.map((b) => b.seqId)).toEqual([1n, 2n, 3n])
      expect(usernames(h.batches)).toEqual(["a", "b", "c", "d", "e"])
    }).pipe(Effect.provide(h.layer))
  })

  it.effect("retries a failed SyncStatus with backoff and loses nothing", () => {
    const h = harness({ failFirst: 2 })
    return Effect.gen(function*() {
      const presence = yield* PresenceBatcher
      presence.online("alice", "ip")
      yield* settle
      expect(h.calls()).toBe(1)
      expect(h.batches).toHaveLength(0)
      presence.offline("bob")
      yield* TestClock.adjust("100 millis")
      yield* settle
      expect(h.calls()).toBe(2)
      yield* TestClock.adjust("200 millis")
      yield* settle
      expect(h.batches[0]!.onlineBatch.map((u) => u.username)).toEqual(["alice"])
      yield* TestClock.adjust("100 millis")
      yield* settle
      expect(h.batches.flatMap((b) => b.offlineBatch.map((u) => u.username))).toContain("bob")
      const backlog = yield* presence.backlog
      expect(backlog).toBe(0)
    }).pipe(Effect.provide(h.layer))
  })

  it.effect("re-announces connected users after Logic comes back", () => {
    const h = harness({ failFirst: 1 })
    return Effect.gen(function*() {
      const hub = yield* ConnectionHub
      const presence = yield* PresenceBatcher
      hub.add(fakeConnection("dave", { remoteAddress: "10.1.1.1" }))
      presence.offline("erin")
      yield* settle
      yield* TestClock.adjust("100 millis")
      yield* settle
      yield* TestClock.adjust("100 millis")
      yield* settle
      yield* TestClock.adjust("100 millis")
      yield* settle
      expect(h.batches[0]!.offlineBatch.map((u) => u.username)).toEqual(["erin"])
      expect(h.batches[1]!.onlineBatch).toEqual([expect.objectContaining({ username: "dave", remoteIp: "10.1.1.1" })])
    }).pipe(Effect.provide(h.layer))
  })

  it.effect("flushes queued events on shutdown", () => {
    const h = harness()
    return Effect.gen(function*() {
      yield* Effect.gen(function*() {
        const presence = yield* PresenceBatcher
        presence.online("alice", "ip")
        presence.offline("bob")
        yield* settle
      }).pipe(Effect.provide(h.layer))
      expect(h.batches).toHaveLength(1)
      expect(usernames(h.batches)).toEqual(["alice"])
      expect(h.batches[0]!.offlineBatch.map((u) => u.username)).toEqual(["bob"])
    })
  })

  it.effect("batches a burst of 5,000 connects into batch_size batches without losing any", () => {
    const h = harness({ batchSize: 50 })
    return Effect.gen(function*() {
      const presence = yield* PresenceBatcher
      for (let i = 0; i < 5000; i++) presence.online(`user-${i}`, "ip")
      for (let round = 0; round < 120 && usernames(h.batches).length < 5000; round++) {
        yield* settle
        yield* TestClock.adjust("100 millis")
      }
      const seen = usernames(h.batches)
      expect(new Set(seen).size).toBe(5000)
      expect(h.batches.length).toBe(100)
      expect(h.batches.every((b) => b.onlineBatch.length <= 50)).toBe(true)
    }).pipe(Effect.provide(h.layer))
  })

  it.effect("a reconnect storm, 1,000 connects over a second, is still batched: at most 25 SyncStatus calls", () => {
    const h = harness({ batchSize: 50 })
    return Effect.gen(function*() {
      const presence = yield* PresenceBatcher
      for (let i = 0; i < 1000; i += 5) {
        for (let j = i; j < i + 5; j++) presence.online(`user-${j}`, "ip")
        yield* settle
        yield* TestClock.adjust("5 millis")
      }
      yield* TestClock.adjust("100 millis")
      yield* settle
      expect(new Set(usernames(h.batches)).size).toBe(1000)
      expect(h.calls()).toBeLessThanOrEqual(25)
    }).pipe(Effect.provide(h.layer))
  })

  it.effect("past max_pending while Logic is away: no unbounded queue, then the online set and the gone users are resynced", () => {
    const h = harness({ failFirst: 3, batcher: { maxPending: 10 } })
    return Effect.gen(function*() {
      const hub = yield* ConnectionHub
      const presence = yield* PresenceBatcher
      for (let i = 0; i < 10; i++) presence.online(`early-${i}`, "ip")
      yield* settle
      // The queue is full: these are remembered by name, not queued.
      for (let i = 0; i < 8; i++) presence.online(`late-${i}`, "ip")
      presence.offline("early-0")
      hub.add(fakeConnection("late-1", { remoteAddress: "10.9.9.9" }))
      expect(yield* presence.backlog).toBeLessThanOrEqual(10)
      for (let round = 0; round < 30; round++) {
        yield* settle
        yield* TestClock.adjust("100 millis")
      }
      const online = usernames(h.batches)
      const offline = h.batches.flatMap((b) => b.offlineBatch.map((u) => u.username))
      // What was queued is delivered; of the overflow, the user still connected is announced and
      // the ones not connected here are reported offline (their online event was never sent).
      for (let i = 0; i < 10; i++) expect(online).toContain(`early-${i}`)
      expect(online).toContain("late-1")
      expect(offline).toContain("early-0")
      expect(offline).toContain("late-2")
      expect(online).not.toContain("late-2")
      expect(yield* presence.backlog).toBe(0)
    }).pipe(Effect.provide(h.layer))
  })

  it.effect("send_offline false reports only online events, as upstream", () => {
    const h = harness({ batcher: { sendOffline: false } })
    return Effect.gen(function*() {
      const presence = yield* PresenceBatcher
      presence.online("alice", "ip")
      presence.offline("bob")
      yield* settle
      yield* TestClock.adjust("100 millis")
      yield* settle
      expect(usernames(h.batches)).toEqual(["alice"])
      expect(h.batches.flatMap((b) => b.offlineBatch)).toEqual([])
    }).pipe(Effect.provide(h.layer))
  })

  it.effect("a new gateway id re-announces everyone connected here under it", () =>
    Effect.gen(function*() {
      const ids = yield* PubSub.unbounded<string>()
      let current = "gateway-service-001"
      const identity = Layer.succeed(GatewayIdentity, {
        get id() {
          return current
        },
        changes: Stream.fromPubSub(ids)
      })
      const h = harness({ identity })
      yield* Effect.gen(function*() {
        const hub = yield* ConnectionHub
        const presence = yield* PresenceBatcher
        hub.add(fakeConnection("alice", { remoteAddress: "10.0.0.1" }))
        presence.online("alice", "10.0.0.1")
        yield* settle
        yield* TestClock.adjust("100 millis")
        yield* settle
        expect(h.batches.map((b) => [b.gatewayId, usernames([b])])).toEqual([["gateway-service-001", ["alice"]]])
        current = "gateway-service-004"
        yield* PubSub.publish(ids, current)
        yield* settle
        yield* TestClock.adjust("100 millis")
        yield* settle
        expect(h.batches.map((b) => [b.gatewayId, usernames([b])])).toEqual([
          ["gateway-service-001", ["alice"]],
          ["gateway-service-004", ["alice"]]
        ])
      }).pipe(Effect.provide(h.layer))
    }))
})
