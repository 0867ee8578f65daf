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
