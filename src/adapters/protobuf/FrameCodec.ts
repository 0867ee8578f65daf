import { Layer } from "effect"
import { WsPacket } from "../../gen/gateway/v1/packet.js"
import type { FrameFault, Packet } from "../../domain/Packet.js"
import { FrameCodec } from "../../application/ports/FrameCodec.js"
import type { FrameCodecShape } from "../../application/ports/FrameCodec.js"

/**
 * WsPacket protobuf; the domain Packet has the generated shape, so nothing is copied. A frame is
 * handed out as a Buffer view of the encoded bytes: `ws` would otherwise make that view for every
 * socket a fan-out writes it to.
 */
export const protobufCodec: FrameCodecShape = {
  encode: (packet: Packet) => {
    const bytes = WsPacket.encode(packet as WsPacket).finish()
    return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  },
  decode: (frame: Uint8Array): Packet | FrameFault => {
    let packet: WsPacket
    try {
      packet = WsPacket.decode(frame)
    } catch (error) {
      return { _tag: "Malformed", detail: error instanceof Error ? error.message : String(error) }
    }
    if (packet.payload === undefined) return { _tag: "UnknownPayload", seq: packet.seq }
    return packet as Packet
  }
}

export const layer: Layer.Layer<FrameCodec> = Layer.succeed(FrameCodec, protobufCodec)
