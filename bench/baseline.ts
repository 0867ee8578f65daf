/**
 * The baseline: a bare `ws` server doing the minimum the gateway's job needs. It accepts the same
 * clients (reading the user from the token's payload, no signature check), holds the sockets, and
 * on `POST /push` writes one pre-encoded frame to each named user, as the gateway does for a Push RPC.
 *
 * Control channel, HTTP/1.1 on the same port:
 *   POST /frame  body = the frame bytes every later push writes
 *   POST /push   body = usernames, one per line; answers the number of frames written
 */
import * as Http from "node:http"
import { WebSocket, WebSocketServer } from "ws"

const port = Number(process.env.BENCH_BASELINE_PORT ?? 0)
const gc = (globalThis as { gc?: () => void }).gc
if (typeof gc === "function") process.on("SIGUSR2", () => gc())

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
    ws.on("close", () => {
      if (byUser.get(username) === ws) byUser.delete(username)
    })
  })
})

server.listen(port, "127.0.0.1")
process.on("SIGTERM", () => process.exit(0))
