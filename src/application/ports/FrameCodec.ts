import { Context } from "effect"
import type { FrameFault, Packet } from "../../domain/Packet.js"

/** Turns WebSocket frames into Packets and back; the wire format lives in an adapter. */
export interface FrameCodecShape {
  readonly encode: (packet: Packet) => Uint8Array
  /** Never throws: a frame that is not a WsPacket comes back as a FrameFault. */
  readonly decode: (frame: Uint8Array) => Packet | FrameFault
}

export class FrameCodec extends Context.Tag("resonance/FrameCodec")<FrameCodec, FrameCodecShape>() {}

export const isFault = (decoded: Packet | FrameFault): decoded is FrameFault => "_tag" in decoded
