import { describe, expect, it } from "@effect/vitest"
import { Effect, SubscriptionRef } from "effect"
import { FrameCodec, isFault } from "../../src/application/ports/FrameCodec.js"
import { GatewayIdentity } from "../../src/application/ports/GatewayIdentity.js"
import { Metrics } from "../../src/application/ports/Metrics.js"
import { ServiceDiscovery } from "../../src/application/ports/ServiceDiscovery.js"
import { ackPacket, pushPacket } from "../../src/domain/Packet.js"

/** Every port has a test Layer a use case can be run against without its adapters. */
describe("the ports' test Layers", () => {
  it.effect("FrameCodec.layerTest round-trips packets with 64-bit ids and refuses what is not a packet", () =>
    Effect.gen(function*() {
      const codec = yield* FrameCodec
      const ack = ackPacket("s-1", { msgId: 2n ** 62n + 1n, seqId: 7n, sessionId: "room", error: "" })
      expect(codec.decode(codec.encode(ack))).toEqual(ack)
      const push = pushPacket({
        msgId: 1n, seqId: 2n, sessionId: "s", fromUsername: "a", toUsername: "b", content: "12n", type: "text", timestamp: 3n,
        sessionMeta: undefined
      })
      expect(codec.decode(codec.encode(push))).toMatchObject({ payload: { value: { msgId: 1n } } })
      const garbage = codec.decode(new Uint8Array([1, 2, 3]))
      expect(isFault(garbage) && garbage._tag).toBe("Malformed")
      const empty = codec.decode(new TextEncoder().encode(JSON.stringify({ seq: "x" })))
      expect(empty).toEqual({ _tag: "UnknownPayload", seq: "x" })
    }).pipe(Effect.provide(FrameCodec.layerTest)))

  it.scoped("ServiceDiscovery.layerTest serves fixed addresses a test can change", () =>
    Effect.gen(function*() {
      const discovery = yield* ServiceDiscovery
      const logic = yield* discovery.addresses("logic-service")
      expect(yield* SubscriptionRef.get(logic)).toEqual(["127.0.0.1:15090"])
      yield* SubscriptionRef.set(logic, [])
      expect(yield* SubscriptionRef.get(yield* discovery.addresses("logic-service"))).toEqual([])
      expect(yield* SubscriptionRef.get(yield* discovery.addresses("unknown"))).toEqual([])
    }).pipe(Effect.provide(ServiceDiscovery.layerTest({ "logic-service": ["127.0.0.1:15090"] }))))

  it.effect("Metrics.layerTest and GatewayIdentity.layerTest", () =>
    Effect.gen(function*() {
      const pulses: Array<number> = []
      const metrics = yield* Effect.provide(Metrics, Metrics.layerTest({ pulse: () => void pulses.push(1) }))
      metrics.pulse()
      metrics.messageReceived()
      expect(pulses).toEqual([1])
      const identity = yield* Effect.provide(GatewayIdentity, GatewayIdentity.layerTest("gw-7"))
      expect(identity.id).toBe("gw-7")
    }))
})
