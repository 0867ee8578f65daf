import { WebSocket } from "ws"
import type { WsPacket } from "../../src/gen/gateway/v1/packet.js"
import { WsPacket as WsPacketFns } from "../../src/gen/gateway/v1/packet.js"

/**
 * A socket that follows the official React client's reconnect rule (web/src/hooks/useWebSocket.ts):
 * on close, when `!event.wasClean` and fewer than 5 attempts were made, connect again after 3 s;
 * an open resets the count. A refused connection counts as an unclean close, as in a browser.
 */
export class OfficialRuleClient {
  static readonly maxAttempts = 5
  static readonly retryMs = 3_000

  ws: WebSocket | undefined
  attempts = 0
  opens = 0
  gaveUp = false
  readonly closes: Array<{ code: number; wasClean: boolean }> = []
  readonly packets: Array<WsPacket> = []
  private stopped = false
  private timer: NodeJS.Timeout | undefined

  /** `onPacket`: each packet goes there instead of into `packets` (a long-running client keeps nothing). */
  constructor(
    private readonly url: string,
    private readonly token: string,
    private readonly onPacket?: (packet: WsPacket) => void
  ) {
    this.connect()
  }

  get open(): boolean {
    return this.ws?.readyState === WebSocket.OPEN
  }

  private connect() {
    const ws = new WebSocket(`${this.url}?token=${encodeURIComponent(this.token)}`)
    this.ws = ws
    ws.binaryType = "nodebuffer"
    ws.addEventListener("open", () => {
      this.opens++
      this.attempts = 0
    })
    ws.addEventListener("message", (event) => {
      const packet = WsPacketFns.decode(new Uint8Array(event.data as Buffer))
      if (this.onPacket === undefined) this.packets.push(packet)
      else this.onPacket(packet)
    })
    ws.addEventListener("error", () => {})
    ws.addEventListener("close", (event) => {
      this.closes.push({ code: event.code, wasClean: event.wasClean })
      if (this.stopped) return
      if (!event.wasClean && this.attempts < OfficialRuleClient.maxAttempts) {
        this.attempts++
        this.timer = setTimeout(() => this.connect(), OfficialRuleClient.retryMs)
      } else {
        this.gaveUp = true
      }
    })
  }

  /** Sends when open, as the client's send does; `false` when it could not. */
  send(packet: WsPacket): boolean {
    if (!this.open) return false
    this.ws!.send(WsPacketFns.encode(packet).finish())
    return true
  }

  stop() {
    this.stopped = true
    clearTimeout(this.timer)
    this.ws?.close()
  }
}

/** One message bubble as the official client keeps it (web/src/stores/message.ts, `ChatMessage`). */
export interface Bubble {
  msgId: string
  seqId: bigint
  readonly content: string
  status: "sending" | "sent" | "failed"
}

/**
 * The official client's message list and its rules for matching (web/src/stores/message.ts with
 * web/src/hooks/useWsMessageHandler.ts): a message sent is a bubble with a temporary id (the
 * chat's seq) and seq_id 0; its ack gives that bubble the msg_id and seq_id; a push is merged into
 * a bubble of its session with the same msg_id or seq_id, else it is a new bubble. So a push of
 * one's own message that comes before its ack is a second bubble.
 */
export class OfficialMessageList {
  readonly sessions = new Map<string, Array<Bubble>>()

  /** Sends as the client does: a pending bubble, and the chat frame with the temporary id as its seq. */
  send(client: { send: (packet: WsPacket) => void }, tempId: string, sessionId: string, content: string): void {
    this.bubblesOf(sessionId).push({ msgId: tempId, seqId: 0n, content, status: "sending" })
    client.send({
      seq: tempId,
      payload: { $case: "chat", value: { sessionId, fromUsername: "", toUsername: "", content, type: "text", timestamp: 0n } }
    })
  }

  /** Every packet a socket receives goes through here, in order. */
  receive(packet: WsPacket): void {
    const payload = packet.payload
    if (payload?.$case === "push") {
      const message = payload.value
      const msgId = message.msgId.toString()
      const bubbles = this.bubblesOf(message.sessionId)
      const same = bubbles.find((b) => b.msgId === msgId || b.seqId === message.seqId)
      if (same !== undefined) {
        same.msgId = msgId
        same.seqId = message.seqId
        same.status = "sent"
      } else {
        bubbles.push({ msgId, seqId: message.seqId, content: message.content, status: "sent" })
      }
    } else if (payload?.$case === "ack") {
      const ack = payload.value
      if (ack.refSeq === "") return
      for (const bubbles of this.sessions.values()) {
        for (const bubble of bubbles) {
          if (bubble.msgId !== ack.refSeq) continue
          if (ack.error !== "") {
            bubble.status = "failed"
          } else {
            bubble.msgId = ack.msgId.toString()
            bubble.seqId = ack.seqId
            bubble.status = "sent"
          }
        }
      }
    }
  }

  bubblesOf(sessionId: string): Array<Bubble> {
    let bubbles = this.sessions.get(sessionId)
    if (bubbles === undefined) this.sessions.set(sessionId, (bubbles = []))
    return bubbles
  }
}
