/**
 * The restart phase of `npm run bench` (issue 27): N clients that follow the official web client's
 * reconnect rule (bench/restart-clients.ts, several processes, many loopback source addresses) are
 * connected to a server; its process group is signalled and it is started again at once on the
 * same port and data, as a supervisor does. Measured per fault: seconds from the signal to the
 * process's exit, to `/healthz` answering and to `/readyz` ready; for the clients, the time from
 * their drop (and from the signal) until they are connected again, the share back within 15 s of
 * the signal, and how many gave up after five failed tries. The raw `ws` server (bench/baseline.ts,
 * bundled to plain JavaScript so it starts as a deployed server would) gets the same clients and
 * the same SIGKILL in the same run.
 *
 * The gateway runs as `npm start` runs it (the start script's command line, minus npm itself
 * unless `--restart-npm`), with its DEFAULT limits and drain: only ports, data file and secret are
 * set (and `--gateway-env` settings), because the judge runs `npm start` unchanged.
 */
import * as Fs from "node:fs"
import * as Http from "node:http"
import * as Path from "node:path"
import type { Child } from "./procs.js"
import { cpuSeconds, freePort, ipcCaller, listenQueueCounters, repoRoot, sleep, spawnChild, startNode } from "./procs.js"
import { percentile } from "./protocol.js"
import type { RestartClientsCommand, RestartClientsResults } from "./restart-clients.js"

export interface RestartOptions {
  readonly clients: number
  readonly processes: number
  /** Clients per loopback source address (the gateway's default cap is 100 WebSockets per address). */
  readonly perAddress: number
  /** One token per client (at least `clients`). */
  readonly tokens: ReadonlyArray<string>
  readonly databasePath: string
  readonly secretKey: string
  /** A directory for the raw server's bundle. */
  readonly work: string
  readonly gatewayRoot: string
  readonly gatewayEnv: Record<string, string>
  /** Extra Node flags for the gateway (`--gateway-flag=`), before npm start's own. */
  readonly gatewayFlags: ReadonlyArray<string>
  /** Go through `npm start` itself (npm, sh and node in the group) instead of its command line. */
  readonly viaNpm: boolean
  /** Per fault: how long after the signal clients may take to come back or give up. */
  readonly settleTimeoutMs: number
  readonly log: (message: string) => void
  readonly logFileFor: (name: string) => { readonly logFile?: string }
}

/** Epoch milliseconds, sub-millisecond resolution: the client processes use the same clock. */
const now = () => performance.timeOrigin + performance.now()

// --- process groups --------------------------------------------------------------------------------

/**
 * Every process group a server was started in. Under `npm start` the group outlives its leader
 * (npm exits on SIGTERM while node still drains), so children are not enough: whatever happens,
 * each group is killed whole on the way out.
 */
const groups = new Set<number>()
const killGroups = () => {
  for (const pgid of groups) {
    try {
      process.kill(-pgid, "SIGKILL")
    } catch {
      // gone
    }
  }
}
process.on("exit", killGroups)

/** Whether a process of the group still runs (zombies left for the container's init to reap do not count). */
const groupAlive = (pgid: number): boolean => {
  try {
    process.kill(-pgid, 0)
  } catch {
    return false
  }
  for (const entry of Fs.readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue
    try {
      const stat = Fs.readFileSync(`/proc/${entry}/stat`, "utf8")
      const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ")
      if (Number(fields[2]) === pgid && fields[0] !== "Z") return true
    } catch {
      // exited meanwhile
    }
  }
  return false
}

/** Resolves when no process of the group is left (polled every 10 ms), with the time it saw that. */
const groupGone = async (pgid: number, timeoutMs: number): Promise<number> => {
  const deadline = now() + timeoutMs
  while (groupAlive(pgid)) {
    if (now() > deadline) {
      process.kill(-pgid, "SIGKILL")
      await sleep(100)
    } else {
      await sleep(10)
    }
  }
  groups.delete(pgid)
  return now()
}

/** CPU-seconds of every live process in the group (npm, sh and node under `--restart-npm`). */
const groupCpuSeconds = (pgid: number): number => {
  let total = 0
  for (const entry of Fs.readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue
    try {
      const stat = Fs.readFileSync(`/proc/${entry}/stat`, "utf8")
      const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ")
      if (Number(fields[2]) === pgid) total += cpuSeconds(Number(entry))
    } catch {
      // exited meanwhile
    }
  }
  return total
}

// --- client processes --------------------------------------------------------------------------

interface ClientProc {
  readonly child: Child
  readonly count: number
  readonly call: <C extends RestartClientsCommand>(command: C, timeoutMs?: number) => Promise<RestartClientsResults[C["cmd"]]>
}

const startClientProc = (name: string, count: number, logFileFor: RestartOptions["logFileFor"]): ClientProc => {
  const child = startNode({ name, entry: "bench/restart-clients.ts", ipc: true, ...logFileFor(name) })
  const call = ipcCaller<RestartClientsCommand, RestartClientsResults>(child, name, 300_000)
  return { child, count, call }
}

/** Loopback source addresses 127.1.x.y, `perAddress` clients each; client i uses address i mod n. */
const sourcesFor = (clients: number, perAddress: number): Array<string> => {
  const n = Math.max(1, Math.ceil(clients / perAddress))
  const addresses = Array.from({ length: n }, (_, a) => `127.1.${Math.floor(a / 250)}.${(a % 250) + 1}`)
  return Array.from({ length: clients }, (_, i) => addresses[i % n]!)
}

/** Starts the client processes and connects every client to `wsUrl`; throws when some never open. */
const connectClients = async (options: RestartOptions, wsUrl: string, tag: string): Promise<Array<ClientProc>> => {
  const sources = sourcesFor(options.clients, options.perAddress)
  const per = Math.ceil(options.clients / options.processes)
  const procs: Array<ClientProc> = []
  for (let p = 0; p * per < options.clients; p++) {
    procs.push(startClientProc(`restart-clients-${tag}-${p + 1}`, Math.min(per, options.clients - p * per), options.logFileFor))
  }
  const started = now()
  const results = await Promise.all(procs.map((proc, p) =>
    proc.call({
      cmd: "start",
      url: wsUrl,
      tokens: options.tokens.slice(p * per, p * per + proc.count),
      sources: sources.slice(p * per, p * per + proc.count),
      // A steady connect, not a storm: what is measured is the restart.
      window: Math.max(1, Math.floor(200 / procs.length)),
      timeoutMs: 180_000
    })
  ))
  const down = results.reduce((n, r) => n + r.down, 0)
  if (down > 0) throw new Error(`${tag}: ${down} of ${options.clients} clients could not connect`)
  options.log(`restart: ${options.clients} official-rule clients connected to ${tag} in ${((now() - started) / 1000).toFixed(1)} s`)
  return procs
}

const stopClients = async (procs: ReadonlyArray<ClientProc>) => {
  await Promise.all(procs.map((proc) => proc.call({ cmd: "stop" }, 30_000).catch(() => undefined)))
  await sleep(500)
  await Promise.all(procs.map((proc) => proc.child.stop("SIGTERM", 5_000)))
}

// --- servers -------------------------------------------------------------------------------------

interface Server {
  readonly name: string
  child: Child
  /** Starts the server again on the same port and data (detached: the leader of its own group). */
  readonly spawn: () => Child
  readonly wsUrl: string
  readonly healthUrl: string
  readonly readyUrl: string
  readonly metricsUrl?: string
}

/** Status of one GET, 0 when it failed or took more than a second; a new connection each time. */
const probe = (url: string): Promise<number> =>
  new Promise((resolve) => {
    const request = Http.get(url, { agent: false, timeout: 1_000 }, (response) => {
      response.resume()
      resolve(response.statusCode ?? 0)
    })
    request.on("timeout", () => {
      request.destroy()
      resolve(0)
    })
    request.on("error", () => resolve(0))
  })

/** When `url` first answered 200 (polled every 20 ms). */
const firstOk = async (url: string, child: Child, timeoutMs = 60_000): Promise<number> => {
  const deadline = now() + timeoutMs
  for (;;) {
    if ((await probe(url)) === 200) return now()
    if (child.process.exitCode !== null || child.process.signalCode !== null) {
      throw new Error(`${child.name} exited before ${url} answered:\n${child.output()}`)
    }
    if (now() > deadline) throw new Error(`${url}: no 200 within ${timeoutMs} ms`)
    await sleep(20)
  }
}

const wrapUlimit = (executable: string, args: ReadonlyArray<string>): [string, Array<string>] => [
  "bash",
  ["-c", 'ulimit -n "$(ulimit -Hn)" && exec "$0" "$@"', executable, ...args]
]

/** `npm start`'s command line in `root` (the words after `node`), e.g. flags, `scripts/start.mjs main`. */
const npmStartArgs = (root: string): Array<string> => {
  const start: string = JSON.parse(Fs.readFileSync(Path.join(root, "package.json"), "utf8")).scripts.start
  const words = start.trim().split(/\s+/)
  if (words[0] !== "node") throw new Error(`npm start in ${root} is not a node command: ${start}`)
  return words.slice(1)
}

const startGatewayServer = async (options: RestartOptions): Promise<Server> => {
  const [http, grpc, metrics] = [await freePort(), await freePort(), await freePort()]
  const root = options.gatewayRoot
  const env = {
    RESONANCE_SERVICE_HOST: "127.0.0.1",
    RESONANCE_SERVICE_HTTP_PORT: String(http),
    RESONANCE_SERVICE_GRPC_PORT: String(grpc),
    RESONANCE_OBSERVABILITY_METRICS_PORT: String(metrics),
    RESONANCE_EMBEDDED_DATABASE_PATH: options.databasePath,
    RESONANCE_AUTH_SECRET_KEY: options.secretKey,
    ...options.gatewayEnv
  }
  // `npm start` builds the bundle when a source is newer: the first start (not measured) does it.
  let runs = 0
  const spawn = () => {
    const name = `gateway-restart-${++runs}`
    const [command, args] = options.viaNpm
      ? wrapUlimit("npm", ["start", "--silent"])
      : wrapUlimit(process.execPath, [...options.gatewayFlags, ...npmStartArgs(root)])
    const nodeOptions: Record<string, string> = options.viaNpm && options.gatewayFlags.length > 0 ? { NODE_OPTIONS: options.gatewayFlags.join(" ") } : {}
    const child = spawnChild(command, args, { name, env: { ...env, ...nodeOptions }, cwd: root, detached: true, ...options.logFileFor(name) })
    groups.add(child.pid)
    return child
  }
  const server: Server = {
    name: "gateway",
    child: spawn(),
    spawn,
    wsUrl: `ws://127.0.0.1:${http}/ws`,
    healthUrl: `http://127.0.0.1:${http}/healthz`,
    readyUrl: `http://127.0.0.1:${http}/readyz`,
    metricsUrl: `http://127.0.0.1:${metrics}/metrics`
  }
  await firstOk(server.readyUrl, server.child, 180_000)
  return server
}

/** The raw server as plain JavaScript (esbuild, one CommonJS file), started with `npm start`'s Node flags. */
const startRawServer = async (options: RestartOptions): Promise<Server> => {
  const esbuild = await import("esbuild")
  const bundle = Path.join(options.work, "baseline.cjs")
  esbuild.buildSync({
    entryPoints: [Path.join(repoRoot, "bench/baseline.ts")],
    outfile: bundle,
    bundle: true,
    platform: "node",
    format: "cjs",
    target: "node20",
    external: ["bufferutil", "utf-8-validate"],
    logLevel: "warning"
  })
  const port = await freePort()
  const flags = npmStartArgs(repoRoot).filter((word) => word.startsWith("--"))
  let runs = 0
  const spawn = () => {
    const name = `baseline-restart-${++runs}`
    const [command, args] = wrapUlimit(process.execPath, [...flags, bundle])
    const child = spawnChild(command, args, { name, env: { BENCH_BASELINE_PORT: String(port) }, detached: true, ...options.logFileFor(name) })
    groups.add(child.pid)
    return child
  }
  // The baseline answers /readyz as soon as it listens: its health and readiness are one.
  const server: Server = {
    name: "raw ws",
    child: spawn(),
    spawn,
    wsUrl: `ws://127.0.0.1:${port}/ws`,
    healthUrl: `http://127.0.0.1:${port}/readyz`,
    readyUrl: `http://127.0.0.1:${port}/readyz`
  }
  await firstOk(server.readyUrl, server.child)
  return server
}

/** `gateway_websocket_connections_rejected_total` by reason, and accepted connections, from a fresh process. */
const gatewayCounters = async (metricsUrl: string): Promise<{ accepted: number; rejected: Record<string, number> }> => {
  const text = await (await fetch(metricsUrl)).text()
  const rejected: Record<string, number> = {}
  for (const match of text.matchAll(/^gateway_websocket_connections_rejected_total\{reason="([^"]+)"\} ([0-9.e+-]+)$/gm)) {
    rejected[match[1]!] = Number(match[2])
  }
  const accepted = Number(/^gateway_websocket_connections_total(?:\{[^}]*\})? ([0-9.e+-]+)$/m.exec(text)?.[1] ?? Number.NaN)
  return { accepted, rejected }
}

// --- one fault --------------------------------------------------------------------------------------

export interface Spread {
  readonly p50: number
  readonly p90: number
  readonly p99: number
  readonly max: number
}

export interface FaultResult {
  readonly server: string
  readonly signal: "SIGKILL" | "SIGTERM"
  readonly clients: number
  /** Seconds from the signal: the old process's exit (as its parent saw it), the new one's spawn, /healthz 200, /readyz 200. */
  readonly exitS: number
  /** The group leader's exit (npm's under `--restart-npm`; else the same process). */
  readonly leaderExitS: number
  readonly exitCode: number | string
  readonly spawnS: number
  readonly healthzS: number
  readonly readyzS: number
  /** Seconds from spawn to /healthz: the start alone. */
  readonly startS: number
  /** Seconds until back, over every client (one that never came back counts as infinite). */
  readonly fromDrop: Spread
  readonly fromSignal: Spread
  readonly back: number
  readonly backWithin15s: number
  readonly shareWithin15s: number
  readonly gaveUp: number
  /** Neither back nor given up when the wait ended (a try still hanging). */
  readonly stuck: number
  readonly neverDropped: number
  /** Seconds from the signal: first and last client back, and returns per second between them. */
  readonly firstBackS: number
  readonly lastBackS: number
  readonly returnsPerS: number
  readonly failedTries: number
  /** Clients by failed tries before they were back (index 0..5); given-up clients are in 5. */
  readonly triesHistogram: ReadonlyArray<number>
  /** Failed tries by cause, as the client saw them. */
  readonly reasons: Record<string, number>
  readonly redrops: number
  /** Clients back per 0.5 s since the signal. */
  readonly timeline: ReadonlyArray<number>
  /** The new process's CPU: until /readyz, and after it until the clients settled (per client back). */
  readonly startCpuS: number
  readonly reconnectCpuS: number
  readonly cpuUsPerReturn: number
  /** CPU-seconds all client processes used from the signal until the clients settled (the wait included). */
  readonly clientCpuS: number
  /** Seconds from the signal until every client was back or had given up (or the wait ended). */
  readonly settleS: number
  readonly listenOverflows: number
  /** The new gateway's own counts (none for the raw server). */
  readonly accepted?: number
  readonly rejected?: Record<string, number>
}

const spread = (values: Array<number>): Spread => {
  const sorted = Float64Array.from(values).sort()
  return {
    p50: percentile(sorted, 50) / 1000,
    p90: percentile(sorted, 90) / 1000,
    p99: percentile(sorted, 99) / 1000,
    max: (sorted.length > 0 ? sorted[sorted.length - 1]! : Number.NaN) / 1000
  }
}

const seconds = (ms: number) => Math.round(ms) / 1000
const round2 = (value: number) => Math.round(value * 100) / 100

const fault = async (
  options: RestartOptions,
  server: Server,
  procs: ReadonlyArray<ClientProc>,
  signal: "SIGKILL" | "SIGTERM"
): Promise<FaultResult> => {
  await Promise.all(procs.map((proc) => proc.call({ cmd: "arm" })))
  const queueBefore = listenQueueCounters()
  const clientCpuBefore = procs.reduce((sum, proc) => sum + cpuSeconds(proc.child.pid), 0)
  const old = server.child
  const signalAt = now()
  old.signalGroup(signal)
  // A drain that never ends is a result too: it is cut after 60 s.
  const hung = setTimeout(() => old.signalGroup("SIGKILL"), 60_000)
  const exitCode = await old.exited
  clearTimeout(hung)
  const leaderExitAt = now()
  // As a supervisor that waits for the whole group (systemd's control group) before starting again.
  const exitAt = await groupGone(old.pid, 60_000)
  const fresh = server.spawn()
  server.child = fresh
  const spawnAt = now()
  const [healthAt, readyAt] = await Promise.all([firstOk(server.healthUrl, fresh), firstOk(server.readyUrl, fresh)])
  const cpuAtReady = groupCpuSeconds(fresh.pid)
  const total = procs.reduce((n, proc) => n + proc.count, 0)
  const deadline = signalAt + options.settleTimeoutMs
  for (;;) {
    const status = await Promise.all(procs.map((proc) => proc.call({ cmd: "status" })))
    if (status.reduce((n, s) => n + s.settled, 0) >= total || now() > deadline) break
    await sleep(250)
  }
  const cpuAtSettle = groupCpuSeconds(fresh.pid)
  const clientCpu = procs.reduce((sum, proc) => sum + cpuSeconds(proc.child.pid), 0) - clientCpuBefore
  const settleS = seconds(now() - signalAt)
  const queueAfter = listenQueueCounters()
  const collected = await Promise.all(procs.map((proc) => proc.call({ cmd: "collect" })))
  const counters = server.metricsUrl === undefined ? undefined : await gatewayCounters(server.metricsUrl).catch(() => undefined)

  const fromDrop: Array<number> = []
  const fromSignal: Array<number> = []
  const backTimes: Array<number> = []
  const triesHistogram = [0, 0, 0, 0, 0, 0]
  const reasons: Record<string, number> = {}
  let gaveUp = 0
  let stuck = 0
  let neverDropped = 0
  let failedTries = 0
  let redrops = 0
  for (const c of collected) {
    redrops += c.redrops
    for (const [reason, count] of Object.entries(c.reasons)) reasons[reason] = (reasons[reason] ?? 0) + count
    for (let i = 0; i < c.dropAt.length; i++) {
      const drop = c.dropAt[i]
      const back = c.backAt[i]
      failedTries += c.failedTries[i]!
      triesHistogram[Math.min(5, c.failedTries[i]!)]!++
      if (drop === null || drop === undefined) {
        neverDropped++
        continue
      }
      if (back !== null && back !== undefined) {
        fromDrop.push(back - drop)
        fromSignal.push(back - signalAt)
        backTimes.push(back - signalAt)
      } else {
        fromDrop.push(Number.POSITIVE_INFINITY)
        fromSignal.push(Number.POSITIVE_INFINITY)
        if (c.gaveUp[i]) gaveUp++
        else stuck++
      }
    }
  }
  backTimes.sort((a, b) => a - b)
  const timeline: Array<number> = []
  for (const t of backTimes) {
    const bin = Math.max(0, Math.floor(t / 500))
    while (timeline.length <= bin) timeline.push(0)
    timeline[bin]!++
  }
  const backWithin15s = backTimes.filter((t) => t <= 15_000).length
  const first = backTimes[0] ?? Number.NaN
  const last = backTimes[backTimes.length - 1] ?? Number.NaN
  return {
    server: server.name,
    signal,
    clients: total,
    exitS: seconds(exitAt - signalAt),
    leaderExitS: seconds(leaderExitAt - signalAt),
    exitCode,
    spawnS: seconds(spawnAt - signalAt),
    healthzS: seconds(healthAt - signalAt),
    readyzS: seconds(readyAt - signalAt),
    startS: seconds(healthAt - spawnAt),
    fromDrop: spread(fromDrop),
    fromSignal: spread(fromSignal),
    back: backTimes.length,
    backWithin15s,
    shareWithin15s: backWithin15s / total,
    gaveUp,
    stuck,
    neverDropped,
    firstBackS: seconds(first),
    lastBackS: seconds(last),
    returnsPerS: backTimes.length > 1 ? (backTimes.length - 1) / ((last - first) / 1000) : Number.NaN,
    failedTries,
    triesHistogram,
    reasons,
    redrops,
    timeline,
    startCpuS: round2(cpuAtReady),
    reconnectCpuS: round2(cpuAtSettle - cpuAtReady),
    cpuUsPerReturn: ((cpuAtSettle - cpuAtReady) * 1e6) / Math.max(1, backTimes.length),
    clientCpuS: round2(clientCpu),
    settleS,
    listenOverflows: queueAfter.overflows - queueBefore.overflows,
    ...(counters !== undefined ? { accepted: counters.accepted, rejected: counters.rejected } : {})
  }
}

export const faultText = (r: FaultResult): string =>
  `${r.server} ${r.signal === "SIGKILL" ? "kill -9" : "SIGTERM"}: exit ${r.exitS.toFixed(2)} s (${r.exitCode}` +
  (Math.abs(r.leaderExitS - r.exitS) > 0.05 ? `; the group's leader ${r.leaderExitS.toFixed(2)} s` : "") + `), ` +
  `/healthz ${r.healthzS.toFixed(2)} s, /readyz ${r.readyzS.toFixed(2)} s after the signal (start ${r.startS.toFixed(2)} s); ` +
  `back ${r.back}/${r.clients}, ${(r.shareWithin15s * 100).toFixed(2)} % within 15 s, ${r.gaveUp} gave up, ${r.stuck} stuck; ` +
  `from drop p50 ${r.fromDrop.p50.toFixed(2)} / p99 ${r.fromDrop.p99.toFixed(2)} / max ${r.fromDrop.max.toFixed(2)} s, ` +
  `from signal p99 ${r.fromSignal.p99.toFixed(2)} s; returns ${r.firstBackS.toFixed(2)}–${r.lastBackS.toFixed(2)} s ` +
  `(${Math.round(r.returnsPerS)}/s); failed tries ${r.failedTries} ${JSON.stringify(r.reasons)}, clients by failed tries ` +
  `${r.triesHistogram.join("/")}; cpu: start ${r.startCpuS.toFixed(2)} s, ${Math.round(r.cpuUsPerReturn)} µs per return, clients ${r.clientCpuS.toFixed(1)} s over ${r.settleS.toFixed(1)} s; ` +
  `${r.listenOverflows} listen-queue overflows` +
  (r.rejected !== undefined ? `; gateway accepted ${r.accepted}, refused ${JSON.stringify(r.rejected)}` : "") +
  `; back per 0.5 s: ${r.timeline.join(" ")}`

export interface RestartResult {
  readonly clients: number
  readonly processes: number
  readonly sourceAddresses: number
  readonly viaNpm: boolean
  readonly raw: { readonly kill: FaultResult }
  readonly gateway: { readonly kill: FaultResult; readonly term: FaultResult }
}

/** Raw server first, then the gateway: never both holding sockets at once. */
export const restartPhase = async (options: RestartOptions): Promise<RestartResult> => {
  const cleanup: Array<() => Promise<unknown>> = []
  try {
    const raw = await startRawServer(options)
    cleanup.push(async () => raw.child.signalGroup("SIGKILL"))
    let procs = await connectClients(options, raw.wsUrl, "raw")
    cleanup.push(() => Promise.all(procs.map((proc) => proc.child.stop("SIGKILL"))))
    await sleep(1_000)
    const rawKill = await fault(options, raw, procs, "SIGKILL")
    options.log(`restart: ${faultText(rawKill)}`)
    await stopClients(procs)
    raw.child.signalGroup("SIGKILL")
    await raw.child.exited

    const gateway = await startGatewayServer(options)
    cleanup.push(async () => gateway.child.signalGroup("SIGKILL"))
    procs = await connectClients(options, gateway.wsUrl, "gateway")
    await sleep(2_000)
    const kill = await fault(options, gateway, procs, "SIGKILL")
    options.log(`restart: ${faultText(kill)}`)
    await reload(procs)
    const term = await fault(options, gateway, procs, "SIGTERM")
    options.log(`restart: ${faultText(term)}`)
    await stopClients(procs)
    gateway.child.signalGroup("SIGTERM")
    const timer = setTimeout(() => gateway.child.signalGroup("SIGKILL"), 15_000)
    await gateway.child.exited
    clearTimeout(timer)
    return {
      clients: options.clients,
      processes: procs.length,
      sourceAddresses: Math.ceil(options.clients / options.perAddress),
      viaNpm: options.viaNpm,
      raw: { kill: rawKill },
      gateway: { kill, term }
    }
  } finally {
    for (const step of cleanup.reverse()) await step().catch(() => undefined)
    killGroups()
  }
}

/** Clients that gave up are started again (a page reload), so the next fault begins with all N connected. */
const reload = async (procs: ReadonlyArray<ClientProc>) => {
  const results = await Promise.all(procs.map((proc) => proc.call({ cmd: "reload", window: 50, timeoutMs: 120_000 })))
  const down = results.reduce((n, r) => n + r.down, 0)
  if (down > 0) throw new Error(`restart: ${down} clients could not connect again after a reload`)
  await sleep(2_000)
}
