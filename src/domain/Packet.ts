import type { AckBody, ChatRequest, PushMessage } from "./Model.js"

/** One WebSocket frame, decoded. `payload` is undefined when the frame carried no known payload. */
export interface Packet {
  readonly seq: string
  readonly payload:
    | { readonly $case: "pulse"; readonly value: Record<string, never> }
    | { readonly $case: "chat"; readonly value: ChatRequest }
    | { readonly $case: "push"; readonly value: PushMessage }
    | { readonly $case: "ack"; readonly value: AckBody }
    | undefined
}

/** Why a binary frame could not become a Packet. */
export type FrameFault =
  | { readonly _tag: "Malformed"; readonly detail: string }
  | { readonly _tag: "UnknownPayload"; readonly seq: string }

export const pulsePacket = (seq: string): Packet => ({ seq, payload: { $case: "pulse", value: {} } })

export const pushPacket = (message: PushMessage): Packet => ({ seq: "", payload: { $case: "push", value: message } })

export const ackPacket = (seq: string, ack: Omit<AckBody, "refSeq">): Packet => ({
  seq,
  payload: { $case: "ack", value: { refSeq: seq, ...ack } }
})

export const errorAck = (seq: string, error: string, sessionId = ""): Packet =>
  ackPacket(seq, { msgId: 0n, seqId: 0n, sessionId, error })

/** What the gateway must do with a frame a client sent. */
export type Inbound =
  | { readonly _tag: "ReplyPulse"; readonly reply: Packet }
  | { readonly _tag: "ForwardChat"; readonly seq: string; readonly chat: ChatRequest }
  | { readonly _tag: "RecordDelivery"; readonly msgId: bigint; readonly ack: AckBody }
  | { readonly _tag: "Reject"; readonly reply: Packet }

/**
 * Decides how a client frame is answered. The sender of a chat is always the authenticated
 * user and a missing timestamp is filled with `nowSeconds`.
 */
export const classifyInbound = (packet: Packet, username: string, nowSeconds: bigint): Inbound => {
  const payload = packet.payload
  switch (payload?.$case) {
    case "pulse":
      return { _tag: "ReplyPulse", reply: pulsePacket(packet.seq) }
    case "chat": {
      const problem = validateChat(payload.value)
      if (problem !== undefined) return { _tag: "Reject", reply: errorAck(packet.seq, problem, payload.value.sessionId) }
      const chat = payload.value
      return {
        _tag: "ForwardChat",
        seq: packet.seq,
        chat: {
          sessionId: chat.sessionId,
          fromUsername: username,
          toUsername: chat.toUsername,
          content: chat.content,
          type: chat.type === "" ? "text" : chat.type,
          timestamp: chat.timestamp === 0n ? nowSeconds : chat.timestamp
        }
      }
    }
    case "ack":
      return { _tag: "RecordDelivery", msgId: parseMsgId(payload.value.refSeq) ?? payload.value.msgId, ack: payload.value }
    case "push":
      return { _tag: "Reject", reply: errorAck(packet.seq, "push frames are sent by the server only") }
    default:
      return { _tag: "Reject", reply: errorAck(packet.seq, "unknown packet type") }
  }
}

const allowedTypes: ReadonlySet<string> = new Set(["", "text", "image", "file", "system", "audio", "video"])

export const validateChat = (chat: ChatRequest): string | undefined => {
  if (chat.sessionId === "") return "session_id is required"
  if (chat.content === "") return "content is required"
  if (!allowedTypes.has(chat.type)) return `unknown message type "${chat.type}"`
  if (chat.type === "system") return "clients may not send system messages"
  return undefined
}

const parseMsgId = (refSeq: string): bigint | undefined => {
  if (!/^[0-9]{1,20}$/.test(refSeq)) return undefined
  return BigInt(refSeq)
}
