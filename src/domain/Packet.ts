import type { AckBody, ChatRequest, PushMessage } from "./Model.js"
import { isMessageType, messageTypeOf } from "./Model.js"

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

/** What a client may put in a chat. */
export interface ChatRules {
  /** Largest content, in UTF-8 bytes. */
  readonly maxContentBytes: number
}

/** The rules where nothing is configured: 64 KiB of content. */
export const defaultChatRules: ChatRules = { maxContentBytes: 64 * 1024 }

/**
 * Decides how a client frame is answered. The sender of a chat is always the authenticated
 * user, and its timestamp the server's clock: neither is the client's to choose.
 */
export const classifyInbound = (packet: Packet, username: string, nowSeconds: bigint, rules: ChatRules): Inbound => {
  const payload = packet.payload
  switch (payload?.$case) {
    case "pulse":
      return { _tag: "ReplyPulse", reply: pulsePacket(packet.seq) }
    case "chat": {
      const problem = validateChat(payload.value, rules)
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
          type: messageTypeOf(chat.type),
          timestamp: nowSeconds
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

/** Whether `text` takes more than `max` bytes in UTF-8, without encoding it. */
export const exceedsUtf8 = (text: string, max: number): boolean => {
  if (text.length > max) return true
  if (text.length * 3 <= max) return false
  let bytes = 0
  for (let i = 0; i < text.length; i++) {
    const code = text.charCodeAt(i)
    if (code < 0x80) bytes += 1
    else if (code < 0x800) bytes += 2
    // A surrogate pair is one 4-byte character: 2 + 2 over its two halves.
    else if (code >= 0xd800 && code <= 0xdfff) bytes += 2
    else bytes += 3
    if (bytes > max) return true
  }
  return false
}

/** The first rule a client's chat breaks, as the message of its error ack. */
export const validateChat = (chat: ChatRequest, rules: ChatRules): string | undefined => {
  // A direct chat may name the other user instead of the session (`single:<x>:<y>` is derived).
  if (chat.sessionId === "" && chat.toUsername === "") return "session_id or to_username is required"
  if (chat.content === "") return "content is required"
  if (exceedsUtf8(chat.content, rules.maxContentBytes)) return `content is larger than ${rules.maxContentBytes} bytes`
  const type = messageTypeOf(chat.type)
  if (!isMessageType(type)) return `unknown message type "${chat.type}"`
  if (type === "system") return "clients may not send system messages"
  return undefined
}

const parseMsgId = (refSeq: string): bigint | undefined => {
  if (!/^[0-9]{1,20}$/.test(refSeq)) return undefined
  return BigInt(refSeq)
}
