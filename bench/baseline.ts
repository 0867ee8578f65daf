/**
 * The baseline: a bare `ws` server doing the minimum the gateway's job needs. It accepts the same
 * clients (reading the user from the token's payload, no signature check), holds the sockets, and
 * on `POST /push` writes one pre-encoded frame to each named user, as the gateway does for a Push RPC.
 *
 * The chat floor: a client's `chat` frame is decoded, the sender gets an `ack` (its `seq` echoed,
 * a msg_id and the session's next seq_id) and the recipient's socket the message as a `push`: one
 * encode and one write each, nothing stored. Other frames are ignored.
 *
 * Control channel, HTTP/1.1 on the same port:
 *   POST /frame  body = the frame bytes every later push writes
 *   POST /push   body = usernames, one per line; answers the number of frames written
 */
import * as Http from "node:http"
import { getHeapSpaceStatistics } from "node:v8"
import { WebSocket, WebSocketServer } from "ws"
import { WsPacket } from "../src/gen/gateway/v1/packet.js"

const port = Number(process.env.BENCH_BASELINE_PORT ?? 0)
const gc = (globalThis as { gc?: () => void }).gc
if (typeof gc === "function") {
  process.on("SIGUSR2", () => {
    gc()
    // As bench/gc-on-signal.mjs does for the gateway: the young generation's size, for the idle figure.
    const young = getHeapSpaceStatistics().find((space) => space.space_name === "new_space")
    process.stderr.write(`bench-gc new_space=${young?.space_size ?? 0}\n`)
  })
}

const byUser = new Map<string, WebSocket>()
let frame: Buffer = Buffer.alloc(0)

const usernameOf = (token: string | null): string | undefined => {
  const payload = token?.split(".")[1]
  if (payload === undefined) return undefined
  try {
    const sub = (JSON.parse(Buffer.from(payload, "base64url").toString("utf8")) as { sub?: unknown }).sub
    return typeof sub === "string" && sub !== "" ? sub : undefined
  } catch {
    return undefined
  }
}

let nextMsgId = 1n
/** The per-session logical clock a chat needs, in memory only. */
const seqOf = new Map<string, bigint>()

const encode = (packet: WsPacket): Buffer => {
  const bytes = WsPacket.encode(packet).finish()
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength)
}

const onChat = (sender: WebSocket, username: string, data: Buffer) => {
  const packet = WsPacket.decode(data)
  if (packet.payload?.$case !== "chat") return
  const chat = packet.payload.value
  const msgId = nextMsgId++
  const seqId = (seqOf.get(chat.sessionId) ?? 0n) + 1n
  seqOf.set(chat.sessionId, seqId)
  sender.send(encode({
    seq: packet.seq,
    payload: { $case: "ack", value: { refSeq: packet.seq, msgId, seqId, sessionId: chat.sessionId, error: "" } }
  }))
  const recipient = byUser.get(chat.toUsername)
  if (recipient === undefined || recipient.readyState !== WebSocket.OPEN) return
  recipient.send(encode({
    seq: "",
    payload: {
      $case: "push",
      value: {
        msgId,
        seqId,
        sessionId: chat.sessionId,
        // The sender is who the token named, never the client's word.
        fromUsername: username,
        toUsername: chat.toUsername,
        content: chat.content,
        type: chat.type,
        timestamp: chat.timestamp !== 0n ? chat.timestamp : BigInt(Math.floor(Date.now() / 1000)),
        sessionMeta: undefined
      }
    }
  }))
}

const readBody = (request: Http.IncomingMessage): Promise<Buffer> =>
  new Promise((resolve, reject) => {
    const chunks: Array<Buffer> = []
    request.on("data", (chunk: Buffer) => chunks.push(chunk))
    request.on("end", () => resolve(chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks)))
    request.on("error", reject)
  })

const server = Http.createServer((request, response) => {
  readBody(request).then((body) => {
    if (request.method === "POST" && request.url === "/push") {
      let delivered = 0
      for (const username of body.toString("utf8").split("\n")) {
        const ws = byUser.get(username)
        if (ws !== undefined && ws.readyState === WebSocket.OPEN) {
          ws.send(frame)
          delivered++
        }
      }
      response.end(String(delivered))
    } else if (request.method === "POST" && request.url === "/frame") {
      frame = body
      response.end("ok")
    } else if (request.url === "/readyz") {
      response.end(String(byUser.size))
    } else {
      response.statusCode = 404
      response.end()
    }
  }, () => response.destroy())
})

const wss = new WebSocketServer({ noServer: true, clientTracking: false, perMessageDeflate: false, maxPayload: 1024 * 1024 })

server.on("upgrade", (request, socket, head) => {
  socket.on("error", () => socket.destroy())
  const username = usernameOf(new URL(request.url ?? "/", "http://baseline").searchParams.get("token"))
  if (username === undefined) {
    socket.end("HTTP/1.1 401 Unauthorized\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
    return
  }
  wss.handleUpgrade(request, socket, head, (ws) => {
    byUser.set(username, ws)
    ws.on("error", () => {})
    ws.on("message", (data: Buffer) => {
      try {
        onChat(ws, username, data)
      } catch {
        ws.close(1007, "malformed frame")
      }
    })
    ws.on("close", () => {
      if (byUser.get(username) === ws) byUser.delete(username)
    })
  })
})

server.listen(port, "127.0.0.1")
process.on("SIGTERM", () => process.exit(0))
