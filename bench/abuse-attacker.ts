/**
 * One attacker process of `npm run abuse` (bench/abuse.ts): runs the attack named in the
 * `ABUSE_ATTACK` environment variable (JSON: `{ attack, ...parameters }`) against a real gateway
 * and reports over IPC: `{ type: "ready" }` when its opening phase is over (connections made,
 * bodies sent, requests written), `{ type: "done" }` when a bounded attack has finished on its
 * own, and `{ type: "final", stats }` after the orchestrator's `stop`, when it has closed
 * everything. It is its own process so that its sockets count against its own descriptor limit
 * (the hard limit, 20,000 here) and its CPU against neither the gateway nor the bystander.
 */
import * as Http from "node:http"
import * as Http2 from "node:http2"
import * as Net from "node:net"
import { PushRequest } from "../src/gen/gateway/v1/push.js"

if (process.send === undefined) {
  process.stderr.write("bench/abuse-attacker.ts is started by bench/abuse.ts with an IPC channel\n")
  process.exit(2)
}

export type AttackSpec =
  /** Idle HTTP/2 connections: the client preface and an empty SETTINGS frame, then nothing. */
  | { readonly attack: "h2-idle"; readonly port: number; readonly count: number; readonly sourceBlock: number }
  /** HTTP/1.1 request heads without their final CRLF, held. */
  | { readonly attack: "half-http"; readonly port: number; readonly count: number; readonly sourceBlock: number }
  /** `requests` pipelined GETs over `connections` connections, written as fast as the socket takes them. */
  | {
    readonly attack: "pipeline"
    readonly port: number
    readonly connections: number
    readonly requests: number
    readonly path: string
    readonly timeoutMs: number
  }
  /** Push calls with the token whose bodies (declared `declaredBytes`) stop after `sentBytes`. */
  | {
    readonly attack: "h2-stall"
    readonly port: number
    readonly token: string
    readonly streams: number
    readonly declaredBytes: number
    readonly sentBytes: number
  }
  /** Small, complete Push calls without the token, `window` in flight per connection. */
  | {
    readonly attack: "h2-tokenless"
    readonly port: number
    readonly calls: number
    readonly connections: number
    readonly window: number
    readonly timeoutMs: number
  }
  /** Push calls with the token on one connection whose socket is never read after the handshake. */
  | { readonly attack: "h2-noread"; readonly port: number; readonly token: string; readonly calls: number; readonly durationMs: number }
  /** Wrong passwords for one username, `concurrency` in flight from each address, for `durationMs`. */
  | {
    readonly attack: "login-brute"
    readonly port: number
    readonly username: string
    readonly addresses: ReadonlyArray<string>
    readonly concurrency: number
    readonly durationMs: number
  }
  /** `count` logins with wrong passwords (distinct usernames) started at once, spread over `addresses`. */
  | { readonly attack: "login-burst"; readonly port: number; readonly count: number; readonly addresses: ReadonlyArray<string> }

export type AttackerMessage =
  | { readonly type: "ready"; readonly stats: Stats }
  | { readonly type: "done"; readonly stats: Stats }
  | { readonly type: "final"; readonly stats: Stats }
  | { readonly type: "failed"; readonly error: string }

export type Stats = Record<string, number | string | Record<string, number>>

const spec = JSON.parse(process.env.ABUSE_ATTACK ?? "{}") as AttackSpec
const send = (message: AttackerMessage) => process.send!(message)
const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms))

// The orchestrator is gone (exited, killed): nothing of ours outlives it.
process.on("disconnect", () => process.exit(0))

const bump = (counts: Record<string, number>, key: string) => {
  counts[key] = (counts[key] ?? 0) + 1
}

/** Nearest-rank percentile of an ascending array; NaN when empty. */
const percentile = (sorted: ReadonlyArray<number>, p: number): number =>
  sorted.length === 0 ? Number.NaN : sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))]!

/** Source addresses 127.1.x.y: block `b` owns 127.1.(40b … 40b+39).(1 … 100), 100 sockets per address at most. */
const sourceAddress = (block: number, index: number) => {
  const address = Math.floor(index / 100)
  return `127.1.${block * 40 + Math.floor(address / 100)}.${1 + (address % 100)}`
}

// ---------------------------------------------------------------------------------------------
// HTTP/2 written by hand (RFC 9113, RFC 7541), for clients that misbehave below node:http2.

const PREFACE = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
const FRAME = { DATA: 0, HEADERS: 1, SETTINGS: 4, WINDOW_UPDATE: 8 } as const

const frame = (type: number, flags: number, streamId: number, payload: Buffer = Buffer.alloc(0)): Buffer => {
  const header = Buffer.alloc(9)
  header.writeUIntBE(payload.length, 0, 3)
  header[3] = type
  header[4] = flags
  header.writeUInt32BE(streamId & 0x7fffffff, 5)
  return Buffer.concat([header, payload])
}

const settings = (entries: ReadonlyArray<readonly [number, number]>) => {
  const payload = Buffer.alloc(6 * entries.length)
  entries.forEach(([id, value], i) => {
    payload.writeUInt16BE(id, 6 * i)
    payload.writeUInt32BE(value, 6 * i + 2)
  })
  return frame(FRAME.SETTINGS, 0, 0, payload)
}

/** An HPACK integer with an `n`-bit prefix whose high bits are `first`. */
const hpackInt = (first: number, n: number, value: number): Array<number> => {
  const max = (1 << n) - 1
  if (value < max) return [first | value]
  const bytes = [first | max]
  let rest = value - max
  while (rest >= 128) {
    bytes.push((rest & 0x7f) | 0x80)
    rest >>= 7
  }
  bytes.push(rest)
  return bytes
}

const hpackString = (text: string) => {
  const bytes = Buffer.from(text)
  return [...hpackInt(0, 7, bytes.length), ...bytes]
}

/** A Push call's header block: static-table names, literal values, no indexing, no Huffman. */
const pushHeaderBlock = (port: number, token: string | undefined): Buffer =>
  Buffer.from([
    0x83, // :method POST
    0x86, // :scheme http
    ...hpackInt(0, 4, 4), ...hpackString("/resonance.gateway.v1.PushService/Push"), // :path
    ...hpackInt(0, 4, 1), ...hpackString(`127.0.0.1:${port}`), // :authority
    ...hpackInt(0, 4, 31), ...hpackString("application/grpc"), // content-type
    0x00, ...hpackString("te"), ...hpackString("trailers"),
    ...(token === undefined ? [] : [...hpackInt(0, 4, 23), ...hpackString(`Bearer ${token}`)]) // authorization
  ])

/** A small, valid PushRequest in its length-prefixed gRPC frame, for a user nobody holds. */
const pushBody = (): Buffer => {
  const message = PushRequest.encode({
    toUsernames: ["nobody-here"],
    message: {
      msgId: 1n,
      seqId: 1n,
      sessionId: "abuse",
      fromUsername: "abuse",
      toUsername: "nobody-here",
      content: "x".repeat(64),
      type: "text",
      timestamp: 0n,
      sessionMeta: undefined
    }
  }).finish()
  const body = Buffer.alloc(5 + message.length)
  body.writeUInt32BE(message.length, 1)
  body.set(message, 5)
  return body
}

// ---------------------------------------------------------------------------------------------
// Floods of held connections (h2-idle, half-http).

const holdConnections = async (
  port: number,
  count: number,
  block: number,
  greeting: Buffer
): Promise<{ stats: () => Stats; stop: () => void }> => {
  const sockets = new Set<Net.Socket>()
  const errors: Record<string, number> = {}
  let opened = 0
  let failed = 0
  let closedByPeer = 0
  let stopping = false
  const closeAfterMs: Array<number> = []
  const started = performance.now()
  let next = 0
  const one = () =>
    new Promise<void>((resolve) => {
      const index = next++
      const socket = Net.connect({ host: "127.0.0.1", port, localAddress: sourceAddress(block, index) })
      let open = false
      let writtenAt = 0
      const timer = setTimeout(() => socket.destroy(new Error("connect timeout (10 s)")), 10_000)
      socket.on("connect", () => {
        clearTimeout(timer)
        open = true
        opened++
        sockets.add(socket)
        writtenAt = performance.now()
        socket.write(greeting)
        resolve()
      })
      // Whatever the server says (SETTINGS, a 408) is read and dropped: only the held socket matters.
      socket.on("data", () => {})
      socket.on("error", (error: NodeJS.ErrnoException) => bump(errors, error.code ?? error.message))
      socket.on("close", () => {
        clearTimeout(timer)
        sockets.delete(socket)
        if (!open) {
          failed++
          resolve()
        } else if (!stopping) {
          closedByPeer++
          closeAfterMs.push(performance.now() - writtenAt)
        }
      })
    })
  const worker = async () => {
    while (next < count) await one()
  }
  await Promise.all(Array.from({ length: Math.min(256, count) }, worker))
  const connectMs = performance.now() - started
  return {
    stats: () => {
      const sorted = [...closeAfterMs].sort((a, b) => a - b)
      return {
        attempted: count,
        opened,
        failed,
        held: sockets.size,
        closedByPeer,
        closedAfterMsP50: Math.round(percentile(sorted, 50)),
        connectMs: Math.round(connectMs),
        errors
      }
    },
    stop: () => {
      stopping = true
      for (const socket of sockets) socket.destroy()
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Pipelined requests on a few connections.

const pipeline = async (s: Extract<AttackSpec, { attack: "pipeline" }>): Promise<Stats> => {
  const request = Buffer.from(`GET ${s.path} HTTP/1.1\r\nHost: x\r\n\r\n`)
  const statuses: Record<string, number> = {}
  const errors: Record<string, number> = {}
  let written = 0
  let responses = 0
  let closedByPeer = 0
  const started = performance.now()
  const perConnection = Math.ceil(s.requests / s.connections)
  const marker = Buffer.from("HTTP/1.1 ")
  const one = (share: number) =>
    new Promise<void>((resolve) => {
      const socket = Net.connect({ host: "127.0.0.1", port: s.port, localAddress: "127.2.0.1" })
      let mine = 0
      let carry: Buffer = Buffer.alloc(0)
      let finished = false
      const finish = () => {
        if (finished) return
        finished = true
        socket.destroy()
        resolve()
      }
      const timer = setTimeout(finish, s.timeoutMs)
      socket.on("connect", () => {
        // 1,000 requests per write, as fast as the socket drains.
        const batch = Buffer.concat(Array.from({ length: 1000 }, () => request))
        let sent = 0
        const pump = () => {
          while (sent < share) {
            const n = Math.min(1000, share - sent)
            sent += n
            written += n
            const ok = socket.write(n === 1000 ? batch : batch.subarray(0, n * request.length))
            if (!ok) return void socket.once("drain", pump)
          }
        }
        pump()
      })
      // Counts status lines; a marker split across two chunks is found through the carried tail.
      socket.on("data", (chunk: Buffer) => {
        const data = carry.length > 0 ? Buffer.concat([carry, chunk]) : chunk
        let at = data.indexOf(marker)
        let searchedTo = 0
        while (at !== -1 && at + marker.length + 3 <= data.length) {
          bump(statuses, data.subarray(at + marker.length, at + marker.length + 3).toString())
          responses++
          mine++
          searchedTo = at + marker.length + 3
          at = data.indexOf(marker, searchedTo)
        }
        carry = data.subarray(Math.max(searchedTo, data.length - marker.length - 3))
        if (mine >= share) {
          clearTimeout(timer)
          finish()
        }
      })
      socket.on("error", (error: NodeJS.ErrnoException) => bump(errors, error.code ?? error.message))
      socket.on("close", () => {
        if (!finished) closedByPeer++
        clearTimeout(timer)
        finish()
      })
    })
  await Promise.all(Array.from({ length: s.connections }, (_, i) => one(Math.min(perConnection, s.requests - i * perConnection))))
  return {
    requests: s.requests,
    written,
    responses,
    elapsedMs: Math.round(performance.now() - started),
    connectionsClosedByPeer: closedByPeer,
    statuses,
    errors
  }
}

// ---------------------------------------------------------------------------------------------
// Push calls (node:http2 client).

const h2Session = (port: number) =>
  Http2.connect(`http://127.0.0.1:${port}`, {
    // The attacker's own client must not be the one that gives up first.
    maxSessionMemory: 1_000_000,
    localAddress: "127.2.0.2"
  } as Http2.SecureClientSessionOptions)

const stall = async (s: Extract<AttackSpec, { attack: "h2-stall" }>): Promise<{ stats: () => Stats; stop: () => void }> => {
  const session = h2Session(s.port)
  const errors: Record<string, number> = {}
  let sessionClosed = false
  session.on("error", (error: NodeJS.ErrnoException) => bump(errors, `session ${error.code ?? error.message}`))
  session.on("close", () => (sessionClosed = true))
  await new Promise<void>((resolve, reject) => {
    session.once("connect", () => resolve())
    session.once("error", reject)
  })
  const prefix = Buffer.alloc(5)
  prefix.writeUInt32BE(s.declaredBytes, 1)
  const part = Buffer.concat([prefix, Buffer.alloc(s.sentBytes - 5, 0x61)])
  const streams: Array<Http2.ClientHttp2Stream> = []
  let answered = 0
  let closedByPeer = 0
  let flushed = 0
  const statuses: Record<string, number> = {}
  let stopping = false
  const writes: Array<Promise<void>> = []
  for (let i = 0; i < s.streams; i++) {
    const stream = session.request({
      ":method": "POST",
      ":path": "/resonance.gateway.v1.PushService/Push",
      "content-type": "application/grpc",
      te: "trailers",
      authorization: `Bearer ${s.token}`
    })
    streams.push(stream)
    stream.on("response", (headers) => {
      answered++
      bump(statuses, String(headers["grpc-status"] ?? headers[":status"]))
    })
    stream.on("error", (error: NodeJS.ErrnoException) => bump(errors, error.code ?? error.message))
    stream.on("close", () => {
      if (!stopping) closedByPeer++
    })
    writes.push(new Promise<void>((resolve) => stream.write(part, () => {
      flushed++
      resolve()
    })))
  }
  await Promise.race([Promise.all(writes), sleep(60_000)])
  return {
    stats: () => ({
      streams: s.streams,
      declaredBytes: s.declaredBytes,
      sentBytesPerStream: s.sentBytes,
      flushed,
      answeredByGateway: answered,
      closedByGateway: closedByPeer,
      sessionClosed: sessionClosed ? 1 : 0,
      statuses,
      errors
    }),
    stop: () => {
      stopping = true
      session.destroy()
    }
  }
}

const tokenless = async (s: Extract<AttackSpec, { attack: "h2-tokenless" }>): Promise<Stats> => {
  const body = pushBody()
  const statuses: Record<string, number> = {}
  const errors: Record<string, number> = {}
  let started = 0
  let answered = 0
  const begin = performance.now()
  const deadline = begin + s.timeoutMs
  const connection = (share: number) =>
    new Promise<void>((resolve) => {
      const session = h2Session(s.port)
      session.on("error", (error: NodeJS.ErrnoException) => bump(errors, `session ${error.code ?? error.message}`))
      let mine = 0
      let inFlight = 0
      let over = false
      const end = () => {
        if (over) return
        over = true
        session.destroy()
        resolve()
      }
      session.on("close", end)
      const call = () => {
        if (over) return
        // Cut off by the gateway (GOAWAY, then the socket): no more calls on it, and no crash on a
        // request to a session already gone.
        if (mine >= share || performance.now() > deadline || session.closed || session.destroyed) {
          if (inFlight === 0) end()
          return
        }
        mine++
        started++
        inFlight++
        const stream = session.request({
          ":method": "POST",
          ":path": "/resonance.gateway.v1.PushService/Push",
          "content-type": "application/grpc",
          te: "trailers"
        })
        let status: string | undefined
        stream.on("response", (headers) => (status = headers["grpc-status"] as string | undefined))
        stream.on("trailers", (trailers) => (status = (trailers["grpc-status"] as string | undefined) ?? status))
        stream.on("error", (error: NodeJS.ErrnoException) => bump(errors, error.code ?? error.message))
        stream.on("close", () => {
          inFlight--
          if (status !== undefined) {
            answered++
            bump(statuses, status)
          }
          call()
        })
        stream.resume()
        stream.end(body)
      }
      session.once("connect", () => {
        for (let i = 0; i < s.window; i++) call()
      })
    })
  const share = Math.ceil(s.calls / s.connections)
  await Promise.all(Array.from({ length: s.connections }, (_, i) => connection(Math.min(share, s.calls - i * share))))
  const elapsedMs = performance.now() - begin
  return {
    calls: s.calls,
    started,
    answered,
    elapsedMs: Math.round(elapsedMs),
    answeredPerSecond: Math.round(answered / (elapsedMs / 1000)),
    statuses,
    errors
  }
}

/**
 * One connection with huge flow-control windows (as a high-throughput client has), then the
 * socket is paused: the gateway's answers pile up in the kernel's buffers and then in its own.
 */
const noRead = async (s: Extract<AttackSpec, { attack: "h2-noread" }>): Promise<{ stats: () => Stats; stop: () => void }> => {
  const socket = Net.connect({ host: "127.0.0.1", port: s.port, localAddress: "127.2.0.3" })
  const errors: Record<string, number> = {}
  let closedByPeer = false
  let stopping = false
  socket.on("error", (error: NodeJS.ErrnoException) => bump(errors, error.code ?? error.message))
  socket.on("close", () => {
    if (!stopping) closedByPeer = true
  })
  await new Promise<void>((resolve) => socket.once("connect", () => resolve()))
  socket.write(Buffer.concat([
    PREFACE,
    settings([[0x4, 0x7fffffff]]), // SETTINGS_INITIAL_WINDOW_SIZE
    frame(FRAME.WINDOW_UPDATE, 0, 0, Buffer.from([0x7f, 0xff, 0x00, 0x00]))
  ]))
  // Read only until the server's own SETTINGS (acknowledged, as a client must), then never again.
  await new Promise<void>((resolve) => {
    let buffered = Buffer.alloc(0)
    const onData = (chunk: Buffer) => {
      buffered = Buffer.concat([buffered, chunk])
      while (buffered.length >= 9) {
        const length = buffered.readUIntBE(0, 3)
        if (buffered.length < 9 + length) return
        const [type, flags] = [buffered[3]!, buffered[4]!]
        buffered = buffered.subarray(9 + length)
        if (type === FRAME.SETTINGS && (flags & 1) === 0) {
          socket.off("data", onData)
          socket.pause()
          socket.write(frame(FRAME.SETTINGS, 1, 0))
          return resolve()
        }
      }
    }
    socket.on("data", onData)
  })
  const block = pushHeaderBlock(s.port, s.token)
  const body = pushBody()
  let calls = 0
  let bytes = 0
  const started = performance.now()
  let stalledAt: number | undefined
  await new Promise<void>((resolve) => {
    const pump = () => {
      while (calls < s.calls && performance.now() - started < s.durationMs && !socket.destroyed) {
        // 100 calls per write.
        const parts: Array<Buffer> = []
        for (let i = 0; i < 100 && calls < s.calls; i++) {
          const id = 2 * calls + 1
          parts.push(frame(FRAME.HEADERS, 0x4, id, block), frame(FRAME.DATA, 0x1, id, body))
          calls++
        }
        const chunk = Buffer.concat(parts)
        bytes += chunk.length
        if (!socket.write(chunk)) {
          const waitingSince = performance.now()
          const timer = setTimeout(() => {
            stalledAt ??= waitingSince - started
            resolve()
          }, Math.max(0, s.durationMs - (waitingSince - started)))
          socket.once("drain", () => {
            clearTimeout(timer)
            pump()
          })
          return
        }
      }
      resolve()
    }
    pump()
  })
  return {
    stats: () => ({
      callsWritten: calls,
      bytesWritten: bytes,
      writeMs: Math.round(performance.now() - started),
      gatewayStoppedReadingAtMs: stalledAt === undefined ? -1 : Math.round(stalledAt),
      closedByGateway: closedByPeer ? 1 : 0,
      errors
    }),
    stop: () => {
      stopping = true
      socket.destroy()
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Logins.

const login = (port: number, localAddress: string, username: string, password: string, agent: Http.Agent) =>
  new Promise<string>((resolve) => {
    const body = JSON.stringify({ username, password })
    const request = Http.request({
      host: "127.0.0.1",
      port,
      method: "POST",
      path: "/resonance.gateway.v1.AuthService/Login",
      localAddress,
      agent,
      headers: { "content-type": "application/json", "content-length": Buffer.byteLength(body) },
      timeout: 30_000
    }, (response) => {
      response.resume()
      response.on("end", () => resolve(String(response.statusCode)))
      response.on("error", () => resolve("response error"))
    })
    request.on("timeout", () => request.destroy(new Error("timeout")))
    request.on("error", (error: NodeJS.ErrnoException) => resolve(error.code ?? error.message))
    request.end(body)
  })

const bruteForce = async (s: Extract<AttackSpec, { attack: "login-brute" }>): Promise<Stats> => {
  const statuses: Record<string, number> = {}
  const deadline = performance.now() + s.durationMs
  let attempts = 0
  const worker = async (address: string, agent: Http.Agent) => {
    while (performance.now() < deadline) {
      attempts++
      bump(statuses, await login(s.port, address, s.username, `guess-${attempts}`, agent))
    }
  }
  await Promise.all(s.addresses.flatMap((address) => {
    const agent = new Http.Agent({ keepAlive: true, maxSockets: s.concurrency })
    return Array.from({ length: s.concurrency }, () => worker(address, agent))
  }))
  return { attempts, durationMs: s.durationMs, statuses }
}

const burst = async (s: Extract<AttackSpec, { attack: "login-burst" }>): Promise<Stats> => {
  const statuses: Record<string, number> = {}
  const agents = s.addresses.map(() => new Http.Agent({ keepAlive: true, maxSockets: Infinity }))
  const started = performance.now()
  const all = Array.from({ length: s.count }, (_, i) =>
    login(s.port, s.addresses[i % s.addresses.length]!, `stuffed-${i}`, `guess-${i}`, agents[i % agents.length]!).then((status) =>
      bump(statuses, status)
    ))
  send({ type: "ready", stats: { count: s.count } })
  await Promise.all(all)
  return { count: s.count, elapsedMs: Math.round(performance.now() - started), statuses }
}

// ---------------------------------------------------------------------------------------------

/** Runs the attack: held ones wait for `stop`; bounded ones report `done` and then wait for `stop`. */
const main = async () => {
  let stats: () => Stats = () => ({ stoppedBeforeReady: 1 })
  let stop: () => void = () => {}
  // Listened to from the start: a stop during the opening phase ends the process with what it has.
  process.on("message", (message: { cmd?: string }) => {
    if (message.cmd !== "stop") return
    // Stats before closing: what was held when the orchestrator ended the attack.
    const final = stats()
    stop()
    send({ type: "final", stats: final })
    setTimeout(() => process.exit(0), 100)
  })
  switch (spec.attack) {
    case "h2-idle": {
      // Preface plus an empty SETTINGS frame, as a real client's first bytes; then nothing.
      const held = await holdConnections(spec.port, spec.count, spec.sourceBlock, Buffer.concat([PREFACE, settings([])]))
      ;({ stats, stop } = held)
      send({ type: "ready", stats: stats() })
      break
    }
    case "half-http": {
      const held = await holdConnections(spec.port, spec.count, spec.sourceBlock, Buffer.from("GET /healthz HTTP/1.1\r\nHost: x\r\n"))
      ;({ stats, stop } = held)
      send({ type: "ready", stats: stats() })
      break
    }
    case "h2-stall":
    case "h2-noread": {
      const held = spec.attack === "h2-stall" ? await stall(spec) : await noRead(spec)
      ;({ stats, stop } = held)
      send({ type: "ready", stats: stats() })
      break
    }
    case "pipeline":
    case "h2-tokenless":
    case "login-brute":
    case "login-burst": {
      const result = spec.attack === "pipeline"
        ? await pipeline(spec)
        : spec.attack === "h2-tokenless"
        ? await tokenless(spec)
        : spec.attack === "login-brute"
        ? await bruteForce(spec)
        : await burst(spec)
      stats = () => result
      send({ type: "done", stats: result })
      break
    }
    default:
      throw new Error(`unknown attack ${JSON.stringify(spec)}`)
  }
}

main().catch((error) => {
  send({ type: "failed", error: error instanceof Error ? error.stack ?? error.message : String(error) })
  setTimeout(() => process.exit(1), 100)
})
