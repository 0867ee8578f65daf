import { describe, expect, it } from "vitest"
import type { AckBody, PushMessage } from "../../src/domain/Model.js"
import { protobufCodec } from "../../src/adapters/protobuf/FrameCodec.js"
import { encodeAckFrame, encodePulseFrame, encodePushFrame } from "../../src/adapters/protobuf/OutboundFrames.js"
import { WsPacket } from "../../src/gen/gateway/v1/packet.js"

/** A deterministic generator, so a failure names the case that broke. */
const random = (seed: number) => {
  const next = () => {
    seed = (seed * 1_103_515_245 + 12_345) % 2_147_483_648
    return seed / 2_147_483_648
  }
  const pick = <A>(values: ReadonlyArray<A>): A => values[Math.floor(next() * values.length)]!
  return { next, pick }
}

const samples = [
  "",
  "a",
  "alice",
  "0",
  "s".repeat(23),
  "s".repeat(24),
  "x".repeat(200),
  "y".repeat(5_000),
  "你好，世界",
  "emoji 😀 and é",
  "\ud800 lone high",
  "lone low \udc00",
  "\u0000nul",
  "mixed ascii and ü".repeat(3)
]

const int64s = [
  0n,
  1n,
  127n,
  128n,
  16_383n,
  16_384n,
  2n ** 28n - 1n,
  2n ** 28n,
  2n ** 31n,
  2n ** 32n - 1n,
  2n ** 32n,
  2n ** 35n - 1n,
  2n ** 35n,
  2n ** 53n - 1n,
  2n ** 53n,
  2n ** 53n + 1n,
  1_796_681_000_000n,
  (1_796_681_000_000n - 1_577_836_800_000n) << 22n | 5n << 12n | 4_095n,
  2n ** 63n - 1n,
  -1n,
  -(2n ** 63n)
]

const int32s = [0, 1, 2, 3, 127, 128, 2 ** 31 - 1, -1, -(2 ** 31)]

const same = (frame: Uint8Array, packet: WsPacket) => {
  expect(Buffer.isBuffer(frame)).toBe(true)
  expect(Buffer.from(frame).toString("hex")).toBe(Buffer.from(WsPacket.encode(packet).finish()).toString("hex"))
}

describe("OutboundFrames", () => {
  it("writes every push exactly as the generated WsPacket writer does", () => {
    const { next, pick } = random(7)
    for (let i = 0; i < 3_000; i++) {
      const message: PushMessage = {
        msgId: pick(int64s),
        seqId: pick(int64s),
        sessionId: pick(samples),
        fromUsername: pick(samples),
        toUsername: pick(samples),
        content: pick(samples),
        type: pick(samples),
        timestamp: pick(int64s),
        sessionMeta: next() < 0.3 ? undefined : { name: pick(samples), type: pick(int32s) }
      }
      const seq = pick(samples)
      same(encodePushFrame(seq, message), { seq, payload: { $case: "push", value: message } })
    }
  })

  it("writes every ack exactly as the generated WsPacket writer does", () => {
    const { pick } = random(11)
    for (let i = 0; i < 2_000; i++) {
      const ack: AckBody = {
        refSeq: pick(samples),
        msgId: pick(int64s),
        seqId: pick(int64s),
        sessionId: pick(samples),
        error: pick(samples)
      }
      const seq = pick(samples)
      same(encodeAckFrame(seq, ack), { seq, payload: { $case: "ack", value: ack } })
    }
  })

  it("refuses an int64 out of range, as the generated writer does, instead of wrapping it", () => {
    const message: PushMessage = {
      msgId: 2n ** 63n,
      seqId: 1n,
      sessionId: "s",
      fromUsername: "a",
      toUsername: "b",
      content: "c",
      type: "text",
      timestamp: 1n,
      sessionMeta: undefined
    }
    expect(() => WsPacket.encode({ seq: "", payload: { $case: "push", value: message } }).finish()).toThrow()
    expect(() => encodePushFrame("", message)).toThrow(/out of range/)
    expect(() => encodeAckFrame("1", { refSeq: "1", msgId: 1n, seqId: -(2n ** 63n) - 1n, sessionId: "", error: "" })).toThrow(
      /out of range/
    )
    for (const type of [1.5, 2 ** 31, -(2 ** 31) - 1]) {
      const withMeta = { ...message, msgId: 1n, sessionMeta: { name: "n", type } }
      expect(() => WsPacket.encode({ seq: "", payload: { $case: "push", value: withMeta } }).finish()).toThrow()
      expect(() => encodePushFrame("", withMeta)).toThrow(/out of range/)
    }
  })

  it("writes pulses with and without a seq", () => {
    for (const seq of samples) same(encodePulseFrame(seq), { seq, payload: { $case: "pulse", value: {} } })
  })

  it("is what the codec sends, and the codec reads it back", () => {
    const message: PushMessage = {
      msgId: 2n ** 60n + 3n,
      seqId: 42n,
      sessionId: "alice:bob",
      fromUsername: "alice",
      toUsername: "bob",
      content: "héllo",
      type: "text",
      timestamp: 1_796_681_000n,
      sessionMeta: { name: "Bob", type: 1 }
    }
    const frame = protobufCodec.encode({ seq: "", payload: { $case: "push", value: message } })
    same(frame, { seq: "", payload: { $case: "push", value: message } })
    expect(protobufCodec.decode(frame)).toEqual({ seq: "", payload: { $case: "push", value: message } })
  })

  it("gives each frame bytes of its own: a frame held by a slow socket is not overwritten by the next", () => {
    const ack = (n: bigint): AckBody => ({ refSeq: "1", msgId: n, seqId: n, sessionId: "s", error: "" })
    const first = encodeAckFrame("1", ack(1n))
    const copy = Buffer.from(first)
    for (let i = 0; i < 10_000; i++) encodeAckFrame("1", ack(BigInt(i + 2)))
    expect(first.equals(copy)).toBe(true)
  })
})
