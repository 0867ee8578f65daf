import { Context, Layer } from "effect"
import type { FrameFault, Packet } from "../../domain/Packet.js"

/** Turns WebSocket frames into Packets and back; the wire format lives in an adapter. */
export interface FrameCodecShape {
  readonly encode: (packet: Packet) => Uint8Array
  /** Never throws: a frame that is not a WsPacket comes back as a FrameFault. */
  readonly decode: (frame: Uint8Array) => Packet | FrameFault
}

export const isFault = (decoded: Packet | FrameFault): decoded is FrameFault => "_tag" in decoded

const encoder = new TextEncoder()
const decoder = new TextDecoder()

/** Packets as JSON text (bigints as `"123n"`): readable in a failing test, no wire format involved. */
export const jsonCodec: FrameCodecShape = {
  encode: (packet) => encoder.encode(JSON.stringify(packet, (_, value) => (typeof value === "bigint" ? `${value}n` : value))),
  decode: (frame) => {
    try {
      const packet = JSON.parse(decoder.decode(frame), (_, value) =>
        typeof value === "string" && /^-?\d+n$/.test(value) ? BigInt(value.slice(0, -1)) : value) as Packet
      if (typeof packet !== "object" || packet === null || typeof packet.seq !== "string") {
        return { _tag: "Malformed", detail: "not a packet" }
      }
      return packet.payload === undefined ? { _tag: "UnknownPayload", seq: packet.seq } : packet
    } catch (error) {
      return { _tag: "Malformed", detail: error instanceof Error ? error.message : String(error) }
    }
  }
}

export class FrameCodec extends Context.Tag("resonance/FrameCodec")<FrameCodec, FrameCodecShape>() {
  /** Frames as JSON text: the use cases tested without the protobuf adapter. */
  static readonly layerTest: Layer.Layer<FrameCodec> = Layer.succeed(FrameCodec, jsonCodec)
}
