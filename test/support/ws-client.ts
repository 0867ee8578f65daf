import { WebSocket } from "ws"
import type { IncomingMessage } from "node:http"
import type { WsPacket } from "../../src/gen/gateway/v1/packet.js"
import { WsPacket as WsPacketFns } from "../../src/gen/gateway/v1/packet.js"

/** A WebSocket client of the gateway, as the official web client connects (binary WsPackets on `/ws`). */

export interface TestClient {
  readonly ws: WebSocket
  readonly packets: Array<WsPacket>
  /** Resolves with the next packet matching the predicate (already received ones count). */
  readonly next: (predicate?: (packet: WsPacket) => boolean, timeoutMs?: number) => Promise<WsPacket>
  /** `wasClean` as a browser's CloseEvent has it: both close frames exchanged. */
  readonly closed: Promise<{ code: number; reason: string; wasClean: boolean }>
  readonly send: (packet: WsPacket) => void
}

export const connectClient = (
  port: number,
  options: {
    token?: string
    headers?: Record<string, string>
    path?: string
    autoPong?: boolean
    localAddress?: string
    perMessageDeflate?: boolean
  } = {}
): Promise<TestClient> =>
  new Promise((resolve, reject) => {
    const query = options.token !== undefined ? `?token=${encodeURIComponent(options.token)}` : ""
    const ws = new WebSocket(`ws://127.0.0.1:${port}${options.path ?? "/ws"}${query}`, {
      headers: options.headers,
      autoPong: options.autoPong ?? true,
      perMessageDeflate: options.perMessageDeflate ?? false,
      localAddress: options.localAddress
    })
    const packets: Array<WsPacket> = []
    const waiters: Array<{ predicate: (p: WsPacket) => boolean; resolve: (p: WsPacket) => void }> = []
    let consumed = 0
    ws.on("message", (data) => {
      const packet = WsPacketFns.decode(new Uint8Array(data as Buffer))
      packets.push(packet)
      for (let i = 0; i < waiters.length; i++) {
        if (waiters[i]!.predicate(packet)) {
          waiters[i]!.resolve(packet)
          waiters.splice(i, 1)
          break
        }
      }
    })
    const closed = new Promise<{ code: number; reason: string; wasClean: boolean }>((resolveClose) =>
      ws.addEventListener("close", (event) => resolveClose({ code: event.code, reason: event.reason, wasClean: event.wasClean }))
    )
    ws.on("unexpected-response", (_req, res: IncomingMessage) => reject(new UpgradeRefused(res.statusCode ?? 0)))
    ws.on("error", (error) => reject(error))
    ws.on("open", () =>
      resolve({
        ws,
        packets,
        closed,
        send: (packet) => ws.send(WsPacketFns.encode(packet).finish()),
        next: (predicate = () => true, timeoutMs = 5_000) => {
          const found = packets.slice(consumed).find(predicate)
          if (found !== undefined) {
            consumed = packets.indexOf(found) + 1
            return Promise.resolve(found)
          }
          return new Promise((resolveNext, rejectNext) => {
            const timer = setTimeout(() => rejectNext(new Error("no matching packet in time")), timeoutMs)
            waiters.push({
              predicate,
              resolve: (p) => {
                clearTimeout(timer)
                consumed = packets.length
                resolveNext(p)
              }
            })
          })
        }
      })
    )
  })

export class UpgradeRefused extends Error {
  constructor(readonly status: number) {
    super(`upgrade refused with HTTP ${status}`)
  }
}

/** The HTTP status a refused upgrade gets (or 101 when it is accepted, then closed). */
export const upgradeStatus = (port: number, options: Parameters<typeof connectClient>[1] = {}) =>
  connectClient(port, options).then(
    (client) => {
      client.ws.close()
      return 101
    },
    (error) => (error instanceof UpgradeRefused ? error.status : Promise.reject(error))
  )
