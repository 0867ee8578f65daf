import { describe, expect, it } from "vitest"
import { protobufCodec } from "../../src/adapters/protobuf/FrameCodec.js"
import { WsPacket } from "../../src/gen/gateway/v1/packet.js"

describe("protobuf FrameCodec", () => {
  it("encodes to a Buffer over exactly the WsPacket bytes (ws sends it without a copy per socket)", () => {
    const packet = { seq: "7", payload: { $case: "pulse", value: {} } } as never
    const frame = protobufCodec.encode(packet)
    expect(Buffer.isBuffer(frame)).toBe(true)
    const expected = WsPacket.encode(packet as WsPacket).finish()
    expect(Buffer.from(frame).equals(Buffer.from(expected))).toBe(true)
    expect(protobufCodec.decode(frame)).toMatchObject({ seq: "7", payload: { $case: "pulse" } })
  })

  it("answers a fault, never throws, for bytes that are not a WsPacket", () => {
    expect(protobufCodec.decode(Uint8Array.from([0xff, 0xff, 0xff]))).toMatchObject({ _tag: "Malformed" })
    expect(protobufCodec.decode(WsPacket.encode({ seq: "3" } as WsPacket).finish())).toEqual({ _tag: "UnknownPayload", seq: "3" })
  })
})
