/**
 * The load process: real `ws` clients speaking the wire protocol, driven by the orchestrator over
 * IPC. It is its own process so that neither its CPU nor its memory is charged to the gateway.
 */
import { monitorEventLoopDelay } from "node:perf_hooks"
import { WebSocket } from "ws"
import { WsPacket } from "../src/gen/gateway/v1/packet.js"
import type {
  ConnectResult,
  CountResult,
  LevelResult,
  LoadCommand,
  LoadReply,
  LoadRequest,
  RoomResult,
  SaturationResult
} from "./protocol.js"
import { percentile } from "./protocol.js"

if (process.send === undefined) {
  process.stderr.write("bench/load.ts is started by bench/run.ts with an IPC channel\n")
  process.exit(2)
}

let usernames: ReadonlyArray<string> = []
let tokens: ReadonlyArray<string> = []
/** For every paired user: the other member and the direct session, by user index. */
let partner = new Int32Array(0)
let sessionOf: Array<string> = []
let pairCount = 0

const sockets: Array<WebSocket | undefined> = []
let openCount = 0
let onAllClosed: (() => void) | undefined

type Mode = "idle" | "count" | "chat" | "room"
let mode: Mode = "idle"

// --- count mode (fan-out) -----------------------------------------------------------------
let counted = 0
let firstAt = 0
let lastAt = 0
let countTarget = Infinity
let onCountReached: (() => void) | undefined

// --- chat mode (e2e) ----------------------------------------------------------------------
let nextId = 1
/** Ids in [measureFrom, measureTo) are measured; sentAt[id - measureFrom] is their intended send time. */
let measureFrom = 0
let measureTo = 0
let sentAt = new Float64Array(0)
let latencies = new Float64Array(0)
let latencyCount = 0
let lastReceivedAt = 0
let onMeasuredDone: (() => void) | undefined
let acked = 0
let ackErrors = 0
let firstAckError = ""
let onAck: ((user: number) => void) | undefined

/** When any frame last arrived, whatever the mode: lets the orchestrator wait for a backlog to drain. */
let lastFrameAt = 0

const onMessage = (user: number) => (data: Buffer) => {
  lastFrameAt = performance.now()
  if (mode === "count") {
    const now = performance.now()
    if (counted === 0) firstAt = now
    lastAt = now
    if (++counted >= countTarget && onCountReached !== undefined) onCountReached()
    return
  }
  if (mode === "room") return onRoomFrame(data)
  if (mode !== "chat") return
  const payload = WsPacket.decode(data).payload
  if (payload === undefined) return
  if (payload.$case === "push") {
    const id = Number(payload.value.content)
    if (id >= measureFrom && id < measureTo) {
      const now = performance.now()
      latencies[latencyCount++] = now - sentAt[id - measureFrom]!
      lastReceivedAt = now
      if (latencyCount >= measureTo - measureFrom && onMeasuredDone !== undefined) onMeasuredDone()
    }
  } else if (payload.$case === "ack") {
    if (payload.value.error !== "") {
      ackErrors++
      if (firstAckError === "") firstAckError = payload.value.error
    } else {
      acked++
    }
    if (onAck !== undefined) onAck(user)
  }
}

// --- room mode -----------------------------------------------------------------------------
let roomSession = ""
/** Every delivery of a measured room message: receipt time − intended send time. */
let roomLatencies = new Float64Array(0)
let roomDeliveries = 0
let roomExpected = Infinity
let onRoomDone: (() => void) | undefined

const onRoomFrame = (data: Buffer) => {
  const payload = WsPacket.decode(data).payload
  if (payload?.$case === "ack" && payload.value.error !== "") {
    ackErrors++
    if (firstAckError === "") firstAckError = payload.value.error
  }
  if (payload?.$case !== "push" || payload.value.sessionId !== roomSession) return
  const id = Number(payload.value.content)
  if (id < measureFrom || id >= measureTo) return
  if (roomDeliveries < roomLatencies.length) roomLatencies[roomDeliveries] = performance.now() - sentAt[id - measureFrom]!
  if (++roomDeliveries >= roomExpected && onRoomDone !== undefined) onRoomDone()
}

const sleepMs = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms))

const chatFrame = (from: number, id: number, room?: string): Uint8Array =>
  WsPacket.encode({
    seq: String(id),
    payload: {
      $case: "chat",
      value: {
        sessionId: room ?? sessionOf[from]!,
        // The gateway sets the sender from the token; a client value is never trusted.
        fromUsername: "",
        toUsername: room !== undefined ? "" : usernames[partner[from]!]!,
        content: String(id),
        type: "text",
        timestamp: 0n
      }
    }
  }).finish()

const sendChat = (from: number, id: number, room?: string): boolean => {
  const ws = sockets[from]
  if (ws === undefined || ws.readyState !== WebSocket.OPEN) return false
  ws.send(chatFrame(from, id, room))
  return true
}

const connectOne = (url: string, user: number, localAddress: string | undefined, timeoutMs: number) =>
  new Promise<string | undefined>((resolve) => {
    const ws = new WebSocket(`${url}?token=${encodeURIComponent(tokens[user]!)}`, {
      perMessageDeflate: false,
      handshakeTimeout: timeoutMs,
      ...(localAddress !== undefined ? { localAddress } : {})
    })
    let settled = false
    const settle = (error: string | undefined) => {
      if (settled) return
      settled = true
      resolve(error)
    }
    ws.on("open", () => {
      sockets[user] = ws
      openCount++
      settle(undefined)
    })
    ws.on("message", onMessage(user))
    ws.on("unexpected-response", (_request, response) => {
      settle(`HTTP ${response.statusCode}`)
      ws.terminate()
    })
    ws.on("error", (error) => settle(error.message))
    ws.on("close", () => {
      if (sockets[user] === ws) {
        sockets[user] = undefined
        openCount--
        if (openCount === 0 && onAllClosed !== undefined) onAllClosed()
      }
      settle("closed before open")
    })
  })

const connect = async (command: Extract<LoadCommand, { cmd: "connect" }>): Promise<ConnectResult> => {
  const { count, from, localAddresses, url } = command
  const concurrency = command.concurrency <= 0 ? count : Math.min(command.concurrency, count)
  let next = 0
  let opened = 0
  let failed = 0
  let firstError = ""
  const started = performance.now()
  let lastOpen = started
  const worker = async () => {
    while (next < count) {
      const user = from + next++
      const address = localAddresses.length > 0 ? localAddresses[user % localAddresses.length] : undefined
      const error = await connectOne(url, user, address, command.timeoutMs)
      if (error === undefined) {
        opened++
        lastOpen = performance.now()
      } else {
        failed++
        if (firstError === "") firstError = error
      }
    }
  }
  await Promise.all(Array.from({ length: concurrency }, worker))
  return { opened, failed, elapsedMs: lastOpen - started, firstError }
}

const closeAll = async (): Promise<{ closed: number }> => {
  const closing = openCount
  if (openCount > 0) {
    const allClosed = new Promise<void>((resolve) => (onAllClosed = resolve))
    for (const ws of sockets) ws?.close(1000, "bench done")
    const timer = setTimeout(() => {
      for (const ws of sockets) ws?.terminate()
    }, 3_000)
    await allClosed
    clearTimeout(timer)
    onAllClosed = undefined
  }
  return { closed: closing }
}

/** Closes the sockets of users `from` and up; the others stay connected. */
const closeFrom = async (from: number): Promise<{ closed: number; open: number }> => {
  const closing = sockets.slice(from).filter((ws) => ws !== undefined && ws.readyState === WebSocket.OPEN)
  await Promise.all(closing.map((ws) =>
    new Promise<void>((resolve) => {
      ws!.once("close", () => resolve())
      ws!.close(1000, "bench: offline")
      setTimeout(() => {
        ws!.terminate()
        resolve()
      }, 3_000).unref()
    })
  ))
  return { closed: closing.length, open: openCount }
}

/**
 * Open loop into one big session: `rate` messages a second from rotating senders among the
 * connected users below `senders`; every other connected member should receive each one.
 */
const roomLevel = async (command: Extract<LoadCommand, { cmd: "room" }>): Promise<RoomResult> => {
  const { drainMs, durationMs, rate, senders, sessionId, warmupMs } = command
  const warmupCount = Math.floor((rate * warmupMs) / 1000)
  const measuredCount = Math.floor((rate * durationMs) / 1000)
  const base = nextId
  nextId += warmupCount + measuredCount
  measureFrom = base + warmupCount
  measureTo = measureFrom + measuredCount
  sentAt = new Float64Array(measuredCount)
  const receivers = openCount - 1
  roomSession = sessionId
  roomExpected = measuredCount * receivers
  roomLatencies = new Float64Array(roomExpected)
  roomDeliveries = 0
  acked = 0
  ackErrors = 0
  firstAckError = ""
  mode = "room"
  const start = performance.now()
  const intervalMs = 1000 / rate
  const total = warmupCount + measuredCount
  let k = 0
  await new Promise<void>((resolve) => {
    const tick = () => {
      const due = Math.min(total, Math.floor((performance.now() - start) / intervalMs) + 1)
      for (; k < due; k++) {
        const id = base + k
        if (id >= measureFrom) sentAt[id - measureFrom] = start + k * intervalMs
        sendChat(k % senders, id, sessionId)
      }
      if (k >= total) {
        clearInterval(timer)
        resolve()
      }
    }
    const timer = setInterval(tick, 1)
    tick()
  })
  if (roomDeliveries < roomExpected) {
    await new Promise<void>((resolve) => {
      onRoomDone = resolve
      setTimeout(resolve, drainMs)
    })
    onRoomDone = undefined
  }
  mode = "idle"
  const sorted = roomLatencies.subarray(0, Math.min(roomDeliveries, roomLatencies.length)).sort()
  return {
    rate,
    messages: total,
    measured: measuredCount,
    receivers,
    deliveries: roomDeliveries,
    expectedDeliveries: roomExpected,
    ackErrors,
    firstAckError,
    p50: percentile(sorted, 50),
    p99: percentile(sorted, 99),
    max: sorted.length > 0 ? sorted[sorted.length - 1]! : Number.NaN
  }
}

const countEnd = async (expected: number, timeoutMs: number): Promise<CountResult> => {
  if (counted < expected) {
    await new Promise<void>((resolve) => {
      countTarget = expected
      onCountReached = resolve
      setTimeout(resolve, timeoutMs)
    })
  }
  const result = { count: counted, firstAt, lastAt }
  mode = "idle"
  countTarget = Infinity
  onCountReached = undefined
  return result
}

const resetChat = () => {
  acked = 0
  ackErrors = 0
  firstAckError = ""
  latencyCount = 0
  lastReceivedAt = 0
}

/** Open loop at a fixed rate; latency is taken from the INTENDED send time, so a lagging sender cannot hide queueing. */
const e2eLevel = async (command: Extract<LoadCommand, { cmd: "e2e" }>): Promise<LevelResult> => {
  const { drainMs, durationMs, rate, warmupMs } = command
  const warmupCount = Math.floor((rate * warmupMs) / 1000)
  const measuredCount = Math.floor((rate * durationMs) / 1000)
  const base = nextId
  nextId += warmupCount + measuredCount
  measureFrom = base + warmupCount
  measureTo = measureFrom + measuredCount
  sentAt = new Float64Array(measuredCount)
  latencies = new Float64Array(measuredCount)
  resetChat()
  mode = "chat"
  const loopDelay = monitorEventLoopDelay({ resolution: 1 })
  loopDelay.enable()
  let sent = 0
  let sentMeasured = 0
  let k = 0
  const total = warmupCount + measuredCount
  const start = performance.now()
  const intervalMs = 1000 / rate
  await new Promise<void>((resolve) => {
    const tick = () => {
      const due = Math.min(total, Math.floor((performance.now() - start) / intervalMs) + 1)
      for (; k < due; k++) {
        const id = base + k
        // Alternate direction each round over the pairs, so every user both sends and receives.
        const pair = k % pairCount
        const user = 2 * pair + (Math.floor(k / pairCount) % 2)
        if (id >= measureFrom) sentAt[id - measureFrom] = start + k * intervalMs
        if (sendChat(user, id)) {
          sent++
          if (id >= measureFrom) sentMeasured++
        }
      }
      if (k >= total) {
        clearInterval(timer)
        resolve()
      }
    }
    const timer = setInterval(tick, 1)
    tick()
  })
  const sendEnd = performance.now()
  if (latencyCount < measuredCount) {
    await new Promise<void>((resolve) => {
      onMeasuredDone = resolve
      setTimeout(resolve, drainMs)
    })
    onMeasuredDone = undefined
  }
  mode = "idle"
  loopDelay.disable()
  const sorted = latencies.subarray(0, latencyCount).sort()
  const measureStart = start + warmupMs
  const windowMs = Math.max(1, (latencyCount > 0 ? lastReceivedAt : sendEnd) - measureStart)
  return {
    offeredRate: rate,
    sentRate: sentMeasured / ((sendEnd - measureStart) / 1000),
    sent,
    measured: measuredCount,
    received: latencyCount,
    ackErrors,
    firstAckError,
    p50: percentile(sorted, 50),
    p90: percentile(sorted, 90),
    p99: percentile(sorted, 99),
    p999: percentile(sorted, 99.9),
    max: sorted.length > 0 ? sorted[sorted.length - 1]! : Number.NaN,
    deliveredRate: latencyCount / (windowMs / 1000),
    loadLoopLagMaxMs: loopDelay.max / 1e6,
    loadLoopLagP99Ms: loopDelay.percentile(99) / 1e6
  }
}

/** Closed loop: every paired user keeps `window` chats unacknowledged; acks counted after the warm-up. */
const saturate = async (command: Extract<LoadCommand, { cmd: "saturate" }>): Promise<SaturationResult> => {
  const { durationMs, warmupMs, window } = command
  measureFrom = 0
  measureTo = 0
  resetChat()
  mode = "chat"
  let running = true
  let inFlight = 0
  onAck = (user) => {
    inFlight--
    if (running && sendChat(user, nextId++)) inFlight++
  }
  for (let w = 0; w < window; w++) {
    for (let user = 0; user < pairCount * 2; user++) if (sendChat(user, nextId++)) inFlight++
  }
  await sleepMs(warmupMs)
  const ackedBefore = acked
  const errorsBefore = ackErrors
  const measureStart = performance.now()
  await sleepMs(durationMs)
  const elapsedMs = performance.now() - measureStart
  const result: SaturationResult = {
    acked: acked - ackedBefore,
    ackErrors: ackErrors - errorsBefore,
    firstAckError,
    elapsedMs,
    ackedPerSecond: (acked - ackedBefore) / (elapsedMs / 1000)
  }
  running = false
  // Let what is still in flight settle, so it does not leak into the next phase.
  const deadline = performance.now() + 5_000
  while (inFlight > 0 && performance.now() < deadline) await sleepMs(20)
  onAck = undefined
  mode = "idle"
  return result
}

/** Resolves once no frame has arrived for `quietMs`, or after `timeoutMs`; answers how long that took. */
const quiet = async (quietMs: number, timeoutMs: number): Promise<{ waitedMs: number; drained: boolean }> => {
  const started = performance.now()
  while (performance.now() - lastFrameAt < quietMs) {
    if (performance.now() - started > timeoutMs) return { waitedMs: performance.now() - started, drained: false }
    await sleepMs(50)
  }
  return { waitedMs: performance.now() - started, drained: true }
}

const run = async (command: LoadCommand): Promise<unknown> => {
  switch (command.cmd) {
    case "quiet":
      return quiet(command.quietMs, command.timeoutMs)
    case "users": {
      usernames = command.usernames
      tokens = command.tokens
      partner = new Int32Array(usernames.length).fill(-1)
      sessionOf = new Array<string>(usernames.length)
      for (const pair of command.pairs) {
        partner[pair.a] = pair.b
        partner[pair.b] = pair.a
        sessionOf[pair.a] = pair.sessionId
        sessionOf[pair.b] = pair.sessionId
      }
      pairCount = command.pairs.length
      // Pair i must be users 2i and 2i+1: the e2e sender arithmetic relies on it.
      command.pairs.forEach((pair, i) => {
        if (pair.a !== 2 * i || pair.b !== 2 * i + 1) throw new Error(`pair ${i} is not users ${2 * i}/${2 * i + 1}`)
      })
      return { users: usernames.length }
    }
    case "connect":
      return connect(command)
    case "closeAll":
      return closeAll()
    case "closeFrom":
      return closeFrom(command.from)
    case "room":
      return roomLevel(command)
    case "countBegin":
      counted = 0
      firstAt = 0
      lastAt = 0
      mode = "count"
      return {}
    case "countEnd":
      return countEnd(command.expected, command.timeoutMs)
    case "e2e":
      return e2eLevel(command)
    case "saturate":
      return saturate(command)
  }
}

process.on("message", (request: LoadRequest) => {
  run(request.command).then(
    (result) => process.send!({ id: request.id, ok: true, result } satisfies LoadReply),
    (error: unknown) =>
      process.send!({ id: request.id, ok: false, error: error instanceof Error ? error.stack ?? error.message : String(error) } satisfies LoadReply)
  )
})
process.on("disconnect", () => process.exit(0))
