import { Layer } from "effect"
import { WsPacket } from "../../gen/gateway/v1/packet.js"
import type { FrameFault, Packet } from "../../domain/Packet.js"
import { FrameCodec } from "../../application/ports/FrameCodec.js"
import type { FrameCodecShape } from "../../application/ports/FrameCodec.js"
import { encodeAckFrame, encodePulseFrame, encodePushFrame } from "./OutboundFrames.js"

/**
 * WsPacket protobuf; the domain Packet has the generated shape, so nothing is copied. The frames a
 * gateway sends (push, ack, pulse) are written by `OutboundFrames`, the rest by the generated
 * writer; either way a frame is a Buffer: `ws` would otherwise make a view for every socket a
 * fan-out writes it to.
 */
export const protobufCodec: FrameCodecShape = {
  encode: (packet: Packet) => {
    const payload = packet.payload
    switch (payload?.$case) {
      case "push":
        return encodePushFrame(packet.seq, payload.value)
      case "ack":
        return encodeAckFrame(packet.seq, payload.value)
      case "pulse":
        return encodePulseFrame(packet.seq)
    }
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
