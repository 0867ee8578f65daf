import { describe, expect, it } from "@effect/vitest"
import { wireFrame, WireFrameCache } from "../../src/adapters/ws/WireFrame.js"

const bytes = (length: number) => Uint8Array.from({ length }, (_, i) => i % 251)

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
})
