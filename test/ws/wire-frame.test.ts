import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { PushDelivery } from "../../src/application/PushDelivery.js"
import { wireFrame, WireFrameCache } from "../../src/adapters/ws/WireFrame.js"
import type { PushMessage } from "../../src/domain/Model.js"
import { connectClient, promise, serverPort, tokenFor, wsGatewayLayer } from "../support/gateway.js"

const bytes = (length: number) => Uint8Array.from({ length }, (_, i) => i % 251)

const message = (content: string): PushMessage => ({
  msgId: 7n,
  seqId: 3n,
  sessionId: "single:alice:bob",
  fromUsername: "bob",
  toUsername: "alice",
  content,
  type: "text",
  timestamp: 1700000000n,
  sessionMeta: { name: "bob", type: 1 }
})

describe("prepared WebSocket frames", () => {
  it("frames a payload as RFC 6455 says: FIN + binary, unmasked, the shortest length form", () => {
    const cases: Array<[number, Array<number>]> = [
      [0, [0x82, 0]],
      [125, [0x82, 125]],
      [126, [0x82, 126, 0, 126]],
      [65_535, [0x82, 126, 0xff, 0xff]],
      [65_536, [0x82, 127, 0, 0, 0, 0, 0, 1, 0, 0]],
      [70_000, [0x82, 127, 0, 0, 0, 0, 0, 1, 0x11, 0x70]]
    ]
    for (const [length, header] of cases) {
      const payload = bytes(length)
      const frame = wireFrame(payload)
      expect([...frame.subarray(0, header.length)]).toEqual(header)
      expect(frame.byteLength).toBe(header.length + length)
      expect(Buffer.compare(frame.subarray(header.length), Buffer.from(payload))).toBe(0)
    }
  })

  it("frames a payload once however many sockets it goes to, and a new payload anew", () => {
    const cache = new WireFrameCache()
    const first = bytes(10)
    const framed = cache.of(first)
    expect(cache.of(first)).toBe(framed)
    const second = bytes(10)
    expect(cache.of(second)).not.toBe(framed)
    expect(Buffer.compare(cache.of(second), framed)).toBe(0)
  })

  it.scopedLive("a real client reads pushes of every length form, on every device, in order", () =>
    Effect.gen(function*() {
      const port = yield* serverPort
      const phone = yield* promise(() => connectClient(port, { token: tokenFor("alice") }))
      const laptop = yield* promise(() => connectClient(port, { token: tokenFor("alice") }))
      const push = yield* PushDelivery
      // Encoded packets of < 126, < 65,536 and ≥ 65,536 bytes: each header form.
      const contents = ["hi", "m".repeat(300), "l".repeat(70_000), "again"]
      for (const content of contents) yield* push.deliver(["alice"], message(content))
      for (const device of [phone, laptop]) {
        for (const content of contents) {
          const packet = yield* promise(() => device.next((p) => p.payload?.$case === "push"))
          expect(packet.payload?.$case === "push" && packet.payload.value.content).toBe(content)
        }
      }
    }).pipe(Effect.provide(wsGatewayLayer())))
})
