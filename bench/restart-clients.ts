/**
 * A client process of the restart phase (bench/restart.ts): thousands of sockets that follow the
 * official web client's reconnect rule, the test suite's `OfficialRuleClient` itself (reconnect
 * only after an unclean close or a failed try, 3 s later, at most 5 tries in a row). Driven over
 * IPC; for each fault it records, per client, when its socket dropped, when it was open again,
 * how many tries failed and why, and whether it gave up.
 *
 * `OfficialRuleClient` opens its sockets with no options, so two things are added from outside
 * without touching the rule: every socket is bound to its client's loopback source address (the
 * gateway caps WebSockets per address, `limits.max_connections_per_ip`), by setting `localAddress`
 * on the `net.connect` that `ws` calls synchronously inside `new WebSocket`; and each socket the
 * client makes is observed, by wrapping the instance's (private) `connect`.
 */
import Net from "node:net"
import type { WebSocket } from "ws"
import { OfficialRuleClient } from "../test/support/official-client.js"

/** Commands from the orchestrator (bench/restart.ts), and what each answers. */
export type RestartClientsCommand =
  /** Creates the clients, at most `window` handshakes in flight, and waits until all are open. */
  | {
    readonly cmd: "start"
    readonly url: string
    readonly tokens: ReadonlyArray<string>
    readonly sources: ReadonlyArray<string>
    readonly window: number
    readonly timeoutMs: number
  }
  /** From now on, drops, returns and failed tries are recorded (a new fault). */
  | { readonly cmd: "arm" }
  | { readonly cmd: "status" }
  /** The fault's records; recording stops. */
  | { readonly cmd: "collect" }
  /** Clients that are not open (gave up) start over, as after a page reload. */
  | { readonly cmd: "reload"; readonly window: number; readonly timeoutMs: number }
  | { readonly cmd: "stop" }

export interface BringUpResult {
  readonly open: number
  readonly down: number
  readonly gaveUp: number
  readonly ms: number
}

export interface RestartClientsResults {
  readonly start: BringUpResult
  readonly arm: { readonly armed: number }
  readonly status: {
    readonly clients: number
    readonly dropped: number
    readonly back: number
    readonly gaveUp: number
    /** Dropped, and back or given up. */
    readonly settled: number
    readonly open: number
  }
  /** Per client: epoch ms of the drop and of the last return (null: none), failed tries, gave up. */
  readonly collect: {
    readonly dropAt: ReadonlyArray<number | null>
    readonly backAt: ReadonlyArray<number | null>
    readonly failedTries: ReadonlyArray<number>
    readonly gaveUp: ReadonlyArray<boolean>
    readonly redrops: number
    readonly reasons: Record<string, number>
  }
  readonly reload: BringUpResult
  readonly stop: { readonly stopped: number }
}

if (process.send === undefined) {
  process.stderr.write("bench/restart-clients.ts is started by bench/restart.ts with an IPC channel\n")
  process.exit(2)
}

/** Epoch milliseconds with sub-millisecond resolution: comparable with the orchestrator's clock. */
const now = () => performance.timeOrigin + performance.now()

// --- the source address of the socket being created ----------------------------------------

let sourceAddress: string | undefined
const netConnect = Net.connect
;(Net as { connect: typeof Net.connect }).connect = ((...args: Array<unknown>) => {
  const options = args[0]
  if (sourceAddress !== undefined && typeof options === "object" && options !== null) {
    ;(options as Net.TcpNetConnectOpts).localAddress = sourceAddress
  }
  return (netConnect as (...a: Array<unknown>) => Net.Socket)(...args)
}) as typeof Net.connect

const withSource = <A>(address: string, make: () => A): A => {
  sourceAddress = address
  try {
    return make()
  } finally {
    sourceAddress = undefined
  }
}

// --- the clients -----------------------------------------------------------------------------

let url = ""
let tokens: ReadonlyArray<string> = []
let sources: ReadonlyArray<string> = []
let clients: Array<OfficialRuleClient> = []

/** The fault being recorded; outside one, sockets come and go unrecorded. */
let armed = false
let dropAt = new Float64Array(0)
let backAt = new Float64Array(0)
let failedTries = new Int32Array(0)
/** Sockets that were back and dropped again within the same fault (their back time is the last one). */
let redrops = 0
/** Why tries failed: the `ws` error's code, or its message (e.g. "Unexpected server response: 503"). */
let reasons = new Map<string, number>()
/** Told when a client's socket opens or fails before opening (bringing clients up). */
let onSettled: ((index: number) => void) | undefined

const reasonOf = (error: Error & { code?: string }) =>
  error.code ?? error.message.replace(/\d+\.\d+\.\d+\.\d+:\d+/g, "").trim()

const observe = (index: number, ws: WebSocket) => {
  let opened = false
  let reason: string | undefined
  ws.on("open", () => {
    opened = true
    if (armed && !Number.isNaN(dropAt[index]!) && Number.isNaN(backAt[index]!)) backAt[index] = now()
    onSettled?.(index)
  })
  ws.on("error", (error: Error) => {
    reason ??= reasonOf(error)
  })
  ws.on("close", () => {
    if (!armed) {
      if (!opened) onSettled?.(index)
      return
    }
    if (opened) {
      if (Number.isNaN(dropAt[index]!)) {
        dropAt[index] = now()
      } else if (!Number.isNaN(backAt[index]!)) {
        redrops++
        backAt[index] = Number.NaN
      }
    } else {
      failedTries[index]!++
      const key = reason ?? "closed before open"
      reasons.set(key, (reasons.get(key) ?? 0) + 1)
    }
  })
}

const ignore = () => {}

/** A client as the official rule has it, its sockets bound to its source address and observed. */
const makeClient = (index: number): OfficialRuleClient => {
  const source = sources[index]!
  const client = withSource(source, () => new OfficialRuleClient(url, tokens[index]!, ignore))
  observe(index, client.ws!)
  const connect = (OfficialRuleClient.prototype as unknown as { connect: () => void }).connect
  ;(client as unknown as { connect: () => void }).connect = () => {
    withSource(source, () => connect.call(client))
    observe(index, client.ws!)
  }
  return client
}

const openCount = () => clients.reduce((n, client) => n + (client.open ? 1 : 0), 0)

/** Creates the clients `which` (keeping at most `window` handshakes in flight) and waits until all are open. */
const bringUp = async (which: ReadonlyArray<number>, window: number, timeoutMs: number) => {
  const started = now()
  let next = 0
  const inFlight = new Set<number>()
  await new Promise<void>((resolve) => {
    const pump = () => {
      while (inFlight.size < window && next < which.length) {
        const index = which[next++]!
        inFlight.add(index)
        clients[index] = makeClient(index)
      }
      if (next >= which.length) resolve()
    }
    // A client's first socket opening or failing frees its place (a failed one retries by the rule, 3 s later).
    onSettled = (index) => {
      if (inFlight.delete(index)) pump()
    }
    pump()
  })
  const deadline = started + timeoutMs
  while (which.some((index) => !clients[index]!.open) && now() < deadline) await sleep(100)
  onSettled = undefined
  const down = which.filter((index) => !clients[index]!.open)
  return { open: openCount(), down: down.length, gaveUp: down.filter((index) => clients[index]!.gaveUp).length, ms: now() - started }
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms))

const run = async (command: RestartClientsCommand): Promise<unknown> => {
  switch (command.cmd) {
    case "start": {
      url = command.url
      tokens = command.tokens
      sources = command.sources
      clients = new Array(tokens.length)
      const all = Array.from({ length: tokens.length }, (_, i) => i)
      return bringUp(all, command.window, command.timeoutMs) satisfies Promise<RestartClientsResults["start"]>
    }
    case "arm": {
      const n = clients.length
      dropAt = new Float64Array(n).fill(Number.NaN)
      backAt = new Float64Array(n).fill(Number.NaN)
      failedTries = new Int32Array(n)
      redrops = 0
      reasons = new Map()
      armed = true
      return { armed: n }
    }
    case "status": {
      let settled = 0
      let dropped = 0
      let back = 0
      let gaveUp = 0
      for (let i = 0; i < clients.length; i++) {
        const hasDropped = !Number.isNaN(dropAt[i]!)
        const isBack = !Number.isNaN(backAt[i]!)
        if (hasDropped) dropped++
        if (isBack) back++
        if (clients[i]!.gaveUp && !clients[i]!.open) gaveUp++
        if (hasDropped && (isBack || clients[i]!.gaveUp)) settled++
      }
      return { clients: clients.length, dropped, back, gaveUp, settled, open: openCount() } satisfies RestartClientsResults["status"]
    }
    case "collect": {
      armed = false
      const nan = (value: number) => (Number.isNaN(value) ? null : value)
      return {
        dropAt: Array.from(dropAt, nan),
        backAt: Array.from(backAt, nan),
        failedTries: Array.from(failedTries),
        gaveUp: clients.map((client) => client.gaveUp && !client.open),
        redrops,
        reasons: Object.fromEntries(reasons)
      } satisfies RestartClientsResults["collect"]
    }
    case "reload": {
      // The page is reloaded: a client that gave up starts over as a new one.
      const down = clients.flatMap((client, index) => (client.open ? [] : [index]))
      for (const index of down) clients[index]!.stop()
      return bringUp(down, command.window, command.timeoutMs) satisfies Promise<RestartClientsResults["reload"]>
    }
    case "stop": {
      for (const client of clients) client.stop()
      return { stopped: clients.length }
    }
  }
}

process.on("message", (request: { id: number; command: RestartClientsCommand }) => {
  run(request.command).then(
    (result) => process.send!({ id: request.id, ok: true, result }),
    (error: unknown) => process.send!({ id: request.id, ok: false, error: error instanceof Error ? error.stack ?? error.message : String(error) })
  )
})
process.on("disconnect", () => process.exit(0))
