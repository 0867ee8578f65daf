/**
 * `npm run abuse`: floods a real gateway (started as `npm start` starts it, embedded mode, push
 * served with an internal token, soft descriptor limit at the hard one) as an attacker would,
 * from separate attacker processes (bench/abuse-attacker.ts), and measures what a bystander on
 * another loopback address sees meanwhile: `/healthz` polled every 20 ms over a keep-alive pool
 * and over a new connection each time, and an authenticated WebSocket whose `pulse` (every
 * 50 ms) is timed. A sampler reads the gateway's descriptors and RSS every 200 ms. One row per
 * flood, each on a fresh gateway; prints a table and writes bench/results/abuse.json; exits 1 if
 * any row fails.
 *
 *   npm run abuse -- --only=h2-idle,pipeline --scale=0.1 --hold=5
 */
import { execFileSync } from "node:child_process"
import * as Fs from "node:fs"
import * as Http from "node:http"
import * as Os from "node:os"
import * as Path from "node:path"
import { monitorEventLoopDelay } from "node:perf_hooks"
import { pathToFileURL } from "node:url"
import { Worker } from "node:worker_threads"
import { WebSocket } from "ws"
import { WsPacket } from "../src/gen/gateway/v1/packet.js"
import type { AttackerMessage, AttackSpec, Stats } from "./abuse-attacker.js"
import type { Child } from "./procs.js"
import { cpuSeconds, freePort, hardFileLimit, killAll, listenQueueCounters, repoRoot, sleep, spawnChild, startNode, waitFor, npmStartFlags } from "./procs.js"
import { percentile } from "./protocol.js"
import { table } from "./report.js"

// ---------------------------------------------------------------------------------------------
// Plan.

const flag = (name: string): string | undefined =>
  process.argv.slice(2).find((arg) => arg.startsWith(`--${name}=`))?.slice(name.length + 3)

const scale = Number(flag("scale") ?? "1")
/** How long held floods are held once in place, seconds (the brief: ~20 s). */
const holdMs = Number(flag("hold") ?? "20") * 1000
const only = flag("only")?.split(",").filter((name) => name !== "")
const scaled = (n: number) => Math.max(1, Math.round(n * scale))

const fdLimit = hardFileLimit()
/** The bound on the gateway's peak RSS for a pass. */
const RSS_BOUND = 1024 * 1024 * 1024
/** The bystander's bounds for a pass: p99 of /healthz and of pulses. */
const P99_BOUND_MS = 100
/** A /healthz or pulse without an answer within this is a failure (a missing pulse). */
const TIMEOUT_MS = 2_000
const INTERNAL_TOKEN = "abuse-internal-token-0123456789abcdef0123"
const PASSWORD = "secret-pw-of-a-real-user"

const work = Fs.mkdtempSync(Path.join(Os.tmpdir(), "resonance-abuse-"))
process.on("exit", () => Fs.rmSync(work, { recursive: true, force: true }))

const startFlags = [...npmStartFlags(), ...process.argv.filter((a) => a.startsWith("--gateway-flag=")).map((a) => a.slice("--gateway-flag=".length))]

// ---------------------------------------------------------------------------------------------
// The gateway.

interface Gateway {
  readonly child: Child
  readonly http: number
  readonly grpc: number
  readonly logFile: string
  /** When it exited on its own (a crash) while measured, and how. */
  died: string | undefined
  /** performance.now() at its exit. */
  diedAt: number | undefined
}

/** What the bench sets besides ports and the data file; the rest is the gateway's defaults. */
const gatewaySettings = {
  RESONANCE_SERVICE_HOST: "127.0.0.1",
  RESONANCE_SERVICE_BIND_HOST: "127.0.0.1",
  RESONANCE_LOG_LEVEL: "warn",
  RESONANCE_PUSH_ENABLED: "true",
  RESONANCE_INTERNAL_TOKEN: INTERNAL_TOKEN,
  // The bystander pulses every 50 ms, 20 times a real client's rate: the default (1/s, burst 10)
  // would refuse it with no attack at all, and a small burst would close it (4008) when the pulses
  // held up by a stall arrive together.
  RESONANCE_LIMITS_PULSES_PER_SECOND: "100",
  RESONANCE_LIMITS_PULSE_BURST: "1000",
  RESONANCE_SHUTDOWN_DRAIN_SECONDS: "0.5"
}

const startGateway = async (name: string): Promise<Gateway> => {
  const [http, grpc, metrics] = [await freePort(), await freePort(), await freePort()]
  const dir = Path.join(work, name)
  Fs.mkdirSync(dir, { recursive: true })
  const logFile = Path.join(dir, "gateway.log")
  const child = startNode({
    name: "gateway",
    entry: "src/main.ts",
    nodeFlags: startFlags,
    detached: true,
    logFile,
    env: {
      ...gatewaySettings,
      RESONANCE_EMBEDDED_DATABASE_PATH: Path.join(dir, "resonance.db"),
      RESONANCE_SERVICE_HTTP_PORT: String(http),
      RESONANCE_SERVICE_GRPC_PORT: String(grpc),
      RESONANCE_OBSERVABILITY_METRICS_PORT: String(metrics)
    }
  })
  await waitFor("gateway ready", async () => (await fetch(`http://127.0.0.1:${http}/readyz`)).status === 200, 30_000, child)
  const gateway: Gateway = { child, http, grpc, logFile, died: undefined, diedAt: undefined }
  void child.exited.then((how) => {
    gateway.diedAt ??= performance.now()
    gateway.died ??= `exited (${how})`
  })
  return gateway
}

const stopGateway = async (gateway: Gateway) => {
  gateway.died ??= "stopped by the bench"
  gateway.child.signalGroup("SIGTERM")
  const timer = setTimeout(() => gateway.child.signalGroup("SIGKILL"), 15_000)
  await gateway.child.exited
  clearTimeout(timer)
}

// ---------------------------------------------------------------------------------------------
// HTTP calls from a chosen loopback address.

interface Reply {
  readonly status: number | string
  readonly body: string
  readonly ms: number
}

const post = (port: number, path: string, body: unknown, localAddress: string): Promise<Reply> =>
  new Promise((resolve) => {
    const started = performance.now()
    const text = JSON.stringify(body)
    const request = Http.request({
      host: "127.0.0.1",
      port,
      path,
      method: "POST",
      localAddress,
      agent: false,
      headers: { "content-type": "application/json", "content-length": Buffer.byteLength(text) },
      timeout: 30_000
    }, (response) => {
      let data = ""
      response.on("data", (chunk) => (data += chunk))
      response.on("end", () => resolve({ status: response.statusCode ?? 0, body: data, ms: performance.now() - started }))
    })
    request.on("timeout", () => request.destroy(new Error("timeout")))
    request.on("error", (error: NodeJS.ErrnoException) =>
      resolve({ status: error.code ?? error.message, body: "", ms: performance.now() - started }))
    request.end(text)
  })

const register = async (port: number, username: string, localAddress: string): Promise<string> => {
  const reply = await post(port, "/resonance.gateway.v1.AuthService/Register", { username, password: PASSWORD, nickname: username }, localAddress)
  if (reply.status !== 200) throw new Error(`register ${username}: ${reply.status} ${reply.body}`)
  return JSON.parse(reply.body).accessToken
}

const login = (port: number, username: string, password: string, localAddress: string) =>
  post(port, "/resonance.gateway.v1.AuthService/Login", { username, password }, localAddress)

// ---------------------------------------------------------------------------------------------
// The bystander: /healthz twice (keep-alive pool, new connection) and a pulsing WebSocket.

interface Latency {
  readonly requests: number
  readonly p50: number
  readonly p99: number
  readonly max: number
  readonly failures: number
  readonly errors: Record<string, number>
}

interface PulseSummary {
  readonly sent: number
  readonly answered: number
  readonly p50: number
  readonly p99: number
  readonly max: number
  /** Not answered within 2 s, or due while the socket was down. */
  readonly missing: number
  readonly dueWhileDown: number
  readonly closes: Array<string>
}

class Poller {
  private latencies: Array<number> = []
  private errors: Record<string, number> = {}
  private inFlight = 0

  constructor(
    private readonly port: number,
    private readonly localAddress: string,
    private readonly agent: Http.Agent | false
  ) {}

  reset() {
    this.latencies = []
    this.errors = {}
  }

  /** One GET /healthz; counted when `record` (it was started inside the window). */
  fire(record: boolean) {
    const started = performance.now()
    if (record) this.inFlight++
    let settled = false
    const settle = (error: string | undefined) => {
      if (settled) return
      settled = true
      clearTimeout(timer)
      if (!record) return
      this.inFlight--
      if (error === undefined) this.latencies.push(performance.now() - started)
      else this.errors[error] = (this.errors[error] ?? 0) + 1
    }
    const request = Http.request({
      host: "127.0.0.1",
      port: this.port,
      path: "/healthz",
      localAddress: this.localAddress,
      agent: this.agent,
      headers: this.agent === false ? { connection: "close" } : {}
    }, (response) => {
      response.resume()
      response.on("end", () => settle(response.statusCode === 200 ? undefined : `HTTP ${response.statusCode}`))
      response.on("error", () => settle("response error"))
    })
    // From the intended start, queueing in the pool included.
    const timer = setTimeout(() => {
      settle(`timeout > ${TIMEOUT_MS / 1000} s`)
      request.destroy()
    }, TIMEOUT_MS)
    request.on("error", (error: NodeJS.ErrnoException) => settle(error.code ?? error.message))
    request.end()
  }

  async drained() {
    await waitFor("the bystander's requests answered or timed out", async () => this.inFlight === 0, TIMEOUT_MS + 3_000)
  }

  summary(): Latency {
    const sorted = [...this.latencies].sort((a, b) => a - b)
    const failures = Object.values(this.errors).reduce((sum, n) => sum + n, 0)
    return {
      requests: sorted.length + failures,
      p50: round1(percentile(sorted, 50)),
      p99: round1(percentile(sorted, 99)),
      max: round1(sorted.at(-1) ?? Number.NaN),
      failures,
      errors: this.errors
    }
  }
}

const round1 = (value: number) => Math.round(value * 10) / 10

class Bystander {
  readonly keepAlive: Poller
  readonly fresh: Poller
  // Idle pooled sockets are dropped after 4 s, before the gateway's 5 s keep-alive timeout closes
  // them: a request must not race that close (an ECONNRESET that no attack caused).
  private readonly agent = new Http.Agent({ keepAlive: true, maxSockets: 8, timeout: 4_000 })
  private measuring = false
  private closed = false
  private timers: Array<NodeJS.Timeout> = []
  private ws: WebSocket | undefined
  private seq = 0
  /** Pulse seq → send time, for pulses sent inside the window and not answered yet. */
  private pending = new Map<string, number>()
  private pulseLatencies: Array<number> = []
  private late = 0
  private sent = 0
  private dueWhileDown = 0
  private closes: Array<string> = []
  private readonly lag = monitorEventLoopDelay({ resolution: 10 })

  constructor(private readonly port: number, private readonly token: string) {
    this.keepAlive = new Poller(port, "127.0.0.2", this.agent)
    this.fresh = new Poller(port, "127.0.0.3", false)
  }

  async start() {
    await this.connect()
    this.timers.push(setInterval(() => this.keepAlive.fire(this.measuring), 20))
    this.timers.push(setInterval(() => this.fresh.fire(this.measuring), 20))
    this.timers.push(setInterval(() => this.pulse(), 50))
  }

  private connect(): Promise<void> {
    return new Promise((resolve) => {
      const ws = new WebSocket(`ws://127.0.0.1:${this.port}/ws?token=${encodeURIComponent(this.token)}`, {
        perMessageDeflate: false,
        localAddress: "127.0.0.2",
        handshakeTimeout: TIMEOUT_MS
      })
      ws.on("open", () => {
        this.ws = ws
        resolve()
      })
      ws.on("message", (data: Buffer) => {
        const packet = WsPacket.decode(data)
        if (packet.payload?.$case !== "pulse") return
        const sentAt = this.pending.get(packet.seq)
        if (sentAt === undefined) return
        this.pending.delete(packet.seq)
        const ms = performance.now() - sentAt
        this.pulseLatencies.push(ms)
        if (ms > TIMEOUT_MS) this.late++
      })
      ws.on("error", () => {})
      ws.on("close", (code) => {
        if (this.measuring) this.closes.push(this.ws === ws ? `closed ${code}` : `connect failed ${code}`)
        if (this.ws === ws) this.ws = undefined
        resolve()
        // Back after 500 ms, as a client would; pulses due meanwhile are missing.
        if (!this.closed) setTimeout(() => void this.connect(), 500)
      })
    })
  }

  private pulse() {
    const ws = this.ws
    if (ws === undefined || ws.readyState !== WebSocket.OPEN) {
      if (this.measuring) this.dueWhileDown++
      return
    }
    const seq = `p${++this.seq}`
    if (this.measuring) {
      this.pending.set(seq, performance.now())
      this.sent++
    }
    ws.send(WsPacket.encode({ seq, payload: { $case: "pulse", value: {} } }).finish())
  }

  begin() {
    this.keepAlive.reset()
    this.fresh.reset()
    this.pending.clear()
    this.pulseLatencies = []
    this.late = 0
    this.sent = 0
    this.dueWhileDown = 0
    this.closes = []
    this.lag.reset()
    this.lag.enable()
    this.measuring = true
  }

  /** Ends the window; waits for the window's requests and pulses to be answered or to time out. */
  async end(): Promise<{ keepAlive: Latency; fresh: Latency; pulse: PulseSummary; ownLoopLagMaxMs: number }> {
    this.measuring = false
    this.lag.disable()
    const pulseDeadline = performance.now() + TIMEOUT_MS + 500
    await Promise.all([this.keepAlive.drained(), this.fresh.drained()])
    const wait = pulseDeadline - performance.now()
    if (this.pending.size > 0 && wait > 0) await sleep(wait)
    const sorted = [...this.pulseLatencies].sort((a, b) => a - b)
    return {
      keepAlive: this.keepAlive.summary(),
      fresh: this.fresh.summary(),
      pulse: {
        sent: this.sent,
        answered: this.pulseLatencies.length,
        p50: round1(percentile(sorted, 50)),
        p99: round1(percentile(sorted, 99)),
        max: round1(sorted.at(-1) ?? Number.NaN),
        missing: this.pending.size + this.late + this.dueWhileDown,
        dueWhileDown: this.dueWhileDown,
        closes: this.closes
      },
      ownLoopLagMaxMs: round1(this.lag.max / 1e6)
    }
  }

  close() {
    this.closed = true
    for (const timer of this.timers) clearInterval(timer)
    this.ws?.terminate()
    this.agent.destroy()
  }
}

// ---------------------------------------------------------------------------------------------
// The sampler: descriptors and RSS of the gateway every 200 ms.

/**
 * Reads /proc in a worker thread: listing 20,000 descriptors takes milliseconds, which on the
 * main thread would show up as the bystander's own delay.
 */
const samplerSource = `
const { parentPort, workerData } = require("node:worker_threads")
const fs = require("node:fs")
const started = performance.now()
const read = () => {
  try {
    const fds = fs.readdirSync("/proc/" + workerData.pid + "/fd").length
    const rss = Number(/^VmRSS:\\s+(\\d+)\\s+kB/m.exec(fs.readFileSync("/proc/" + workerData.pid + "/status", "utf8"))[1]) * 1024
    parentPort.postMessage([Math.round(performance.now() - started), fds, rss])
  } catch {}
}
read()
setInterval(read, 200)
`

class Sampler {
  private worker: Worker | undefined
  readonly samples: Array<readonly [number, number, number]> = []

  constructor(private readonly pid: number) {}

  begin() {
    this.worker = new Worker(samplerSource, { eval: true, workerData: { pid: this.pid } })
    this.worker.on("message", (sample: [number, number, number]) => this.samples.push(sample))
  }

  async end() {
    await this.worker?.terminate()
    return {
      peakFds: Math.max(0, ...this.samples.map(([, fds]) => fds)),
      peakRss: Math.max(0, ...this.samples.map(([, , rss]) => rss)),
      rssAtStart: this.samples[0]?.[2] ?? 0,
      fdsAtStart: this.samples[0]?.[1] ?? 0
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Attackers.

const tsxLoader = pathToFileURL(Path.join(repoRoot, "node_modules/tsx/dist/loader.mjs")).href
const attackerEntry = Path.join(repoRoot, "bench/abuse-attacker.ts")

type Reported = Exclude<AttackerMessage, { readonly type: "failed" }>

class Attacker {
  readonly child: Child
  private readonly messages: Array<AttackerMessage> = []
  private waiters: Array<() => void> = []

  private stopping = false

  constructor(readonly spec: AttackSpec) {
    // At the lowest priority: an attacker is another machine, so it gets only the CPU the gateway
    // and the bystander leave (on 2 shared cores it would otherwise slow both down by itself).
    this.child = spawnChild(
      "nice",
      ["-n", "19", "bash", "-c", 'ulimit -n "$(ulimit -Hn)" && exec "$0" "$@"', process.execPath, "--import", tsxLoader, attackerEntry],
      { name: `attacker ${spec.attack}`, ipc: true, env: { ABUSE_ATTACK: JSON.stringify(spec) } }
    )
    this.child.process.on("message", (message: AttackerMessage) => {
      this.messages.push(message)
      for (const wake of this.waiters.splice(0)) wake()
    })
    void this.child.exited.then((how) => {
      if (!this.stopping) process.stderr.write(`abuse: ${this.child.name} exited on its own (${how}): ${this.child.output().slice(-2_000)}\n`)
      for (const wake of this.waiters.splice(0)) wake()
    })
  }

  /** The first message of one of `types`, or undefined after `timeoutMs` or if the process exits. */
  async next(types: ReadonlyArray<Reported["type"]>, timeoutMs: number): Promise<Reported | undefined> {
    const deadline = performance.now() + timeoutMs
    for (;;) {
      const found = this.messages.find((message) => message.type === "failed" || types.includes(message.type))
      if (found !== undefined) {
        if (found.type === "failed") throw new Error(`${this.child.name} failed: ${found.error}`)
        return found as Reported
      }
      const left = deadline - performance.now()
      if (left <= 0 || this.child.process.exitCode !== null || this.child.process.signalCode !== null) return undefined
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left)
        this.waiters.push(() => {
          clearTimeout(timer)
          resolve()
        })
      })
    }
  }

  /** Ready (its opening phase over) or done, whichever it reports. */
  async ready(timeoutMs: number): Promise<Stats | undefined> {
    return (await this.next(["ready", "done"], timeoutMs))?.stats
  }

  async done(timeoutMs: number): Promise<Stats | undefined> {
    return (await this.next(["done"], timeoutMs))?.stats
  }

  /** Stops it (its sockets closed) and returns what it had when stopped; killed if it does not answer. */
  async stop(): Promise<Stats | undefined> {
    this.stopping = true
    // With a callback a failed send (the attacker already gone: EPIPE) is passed here rather than
    // emitted as an 'error' event, which would take the orchestrator down mid-row.
    if (this.child.process.connected) this.child.process.send({ cmd: "stop" }, () => {})
    const final = await this.next(["final"], 10_000).catch(() => undefined)
    await this.child.stop("SIGKILL", 1_000)
    if (final !== undefined) return final.stats
    const last = this.messages.filter((message): message is Reported => message.type !== "failed").at(-1)
    return last?.stats
  }
}

// ---------------------------------------------------------------------------------------------
// Rows.

interface Context {
  readonly gateway: Gateway
  /** Set up before the window: users the attack or the checks need. */
  readonly tokens: Record<string, string>
}

interface Outcome {
  /** What the attack achieved, as the attacker saw it, one line. */
  readonly saw: string
  readonly attacker: unknown
  /** A check of its own besides the bystander's (the login rows): undefined when none. */
  readonly realUsersOk?: boolean
  readonly realUsers?: unknown
}

interface RowSpec {
  readonly name: string
  readonly attack: string
  readonly setup?: (gateway: Gateway) => Promise<Record<string, string>>
  readonly run: (context: Context) => Promise<Outcome>
}

const count = (stats: Stats | undefined, key: string): number => Number(stats?.[key] ?? 0)
const sum = (all: ReadonlyArray<Stats | undefined>, key: string) => all.reduce((total, stats) => total + count(stats, key), 0)
const merged = (all: ReadonlyArray<Stats | undefined>, key: string): Record<string, number> => {
  const out: Record<string, number> = {}
  for (const stats of all) {
    for (const [name, n] of Object.entries((stats?.[key] ?? {}) as Record<string, number>)) out[name] = (out[name] ?? 0) + n
  }
  return out
}
const codes = (counts: Record<string, number>) =>
  Object.entries(counts).sort((a, b) => b[1] - a[1]).map(([name, n]) => `${name}×${n}`).join(" ") || "none"
const fmt = (n: number) => n.toLocaleString("en-US")

/** Starts `attackers`, waits until all are in place, holds them `holdMs`, stops them. */
const heldFlood = async (specs: ReadonlyArray<AttackSpec>) => {
  const attackers = specs.map((spec) => new Attacker(spec))
  try {
    const ready = await Promise.all(attackers.map((attacker) => attacker.ready(120_000)))
    await sleep(holdMs)
    const final = await Promise.all(attackers.map((attacker) => attacker.stop()))
    return { ready, final }
  } finally {
    await Promise.all(attackers.map((attacker) => attacker.stop()))
  }
}

const rows: ReadonlyArray<RowSpec> = [
  {
    name: "control",
    attack: "no attack (control: the bystander alone, 10 s)",
    run: async () => {
      await sleep(10_000)
      return { saw: "", attacker: undefined }
    }
  },
  {
    name: "h2-idle",
    attack: `push port: 2 × ${fmt(scaled(10_000))} idle HTTP/2 connections (preface + SETTINGS, no token), held ${holdMs / 1000} s`,
    run: async ({ gateway }) => {
      const { final, ready } = await heldFlood([0, 1].map((block) => ({
        attack: "h2-idle" as const,
        port: gateway.grpc,
        count: scaled(10_000),
        sourceBlock: block
      })))
      return {
        saw: `opened ${fmt(sum(ready, "opened"))} in ${(Math.max(...ready.map((s) => count(s, "connectMs"))) / 1000).toFixed(1)} s, ` +
          `failed ${fmt(sum(ready, "failed"))}; still held at the end ${fmt(sum(final, "held"))}, ` +
          `closed by the gateway ${fmt(sum(final, "closedByPeer"))}; errors ${codes(merged(final, "errors"))}`,
        attacker: { ready, final }
      }
    }
  },
  {
    name: "half-http",
    attack: `public port: 2 × ${fmt(scaled(10_000))} half-sent requests from 127.1.x.y, held; a second wave 15 s later, held ${holdMs / 1000} s`,
    run: async ({ gateway }) => {
      const spec = (block: number): AttackSpec => ({ attack: "half-http", port: gateway.http, count: scaled(10_000), sourceBlock: block })
      const first = [new Attacker(spec(0)), new Attacker(spec(1))]
      const all = [...first]
      try {
        await sleep(15_000)
        const second = [new Attacker(spec(2)), new Attacker(spec(3))]
        all.push(...second)
        const readyFirst = await Promise.all(first.map((attacker) => attacker.ready(120_000)))
        const readySecond = await Promise.all(second.map((attacker) => attacker.ready(120_000)))
        await sleep(holdMs)
        const finalFirst = await Promise.all(first.map((attacker) => attacker.stop()))
        const finalSecond = await Promise.all(second.map((attacker) => attacker.stop()))
        const wave = (label: string, ready: Array<Stats | undefined>, final: Array<Stats | undefined>) =>
          `${label}: opened ${fmt(sum(ready, "opened"))}/${fmt(sum(ready, "attempted"))}, ` +
          `closed by the gateway ${fmt(sum(final, "closedByPeer"))}` +
          (sum(final, "closedByPeer") > 0 ? ` (median after ${(Math.max(...final.map((s) => count(s, "closedAfterMsP50"))) / 1000).toFixed(1)} s), ` : ", ") +
          `held at the end ${fmt(sum(final, "held"))}, errors ${codes(merged(final, "errors"))}`
        return {
          saw: `${wave("wave 1", readyFirst, finalFirst)}; ${wave("wave 2", readySecond, finalSecond)}`,
          attacker: { readyFirst, finalFirst, readySecond, finalSecond }
        }
      } finally {
        await Promise.all(all.map((attacker) => attacker.stop()))
      }
    }
  },
  {
    name: "pipeline",
    attack: `public port: ${fmt(scaled(100_000))} pipelined GET /api/v1/session/list without a token on 2 connections`,
    run: async ({ gateway }) => {
      const attacker = new Attacker({
        attack: "pipeline",
        port: gateway.http,
        connections: 2,
        requests: scaled(100_000),
        path: "/api/v1/session/list",
        timeoutMs: 120_000
      })
      try {
        const done = await attacker.done(130_000)
        return {
          saw: `${fmt(count(done, "responses"))}/${fmt(count(done, "requests"))} answered in ${(count(done, "elapsedMs") / 1000).toFixed(1)} s ` +
            `(${codes((done?.statuses ?? {}) as Record<string, number>)}); connections closed by the gateway ${count(done, "connectionsClosedByPeer")}`,
          attacker: done
        }
      } finally {
        await attacker.stop()
      }
    }
  },
  {
    name: "h2-stall",
    attack: `push port, with the token: ${fmt(scaled(400))} streams × 2 MiB declared on one connection, 1 MiB sent, stalled ${holdMs / 1000} s`,
    run: async ({ gateway }) => {
      const { final, ready } = await heldFlood([{
        attack: "h2-stall",
        port: gateway.grpc,
        token: INTERNAL_TOKEN,
        streams: scaled(400),
        declaredBytes: 2 * 1024 * 1024,
        sentBytes: 1024 * 1024
      }])
      const [r, f] = [ready[0], final[0]]
      return {
        saw: `${fmt(count(r, "flushed"))}/${fmt(count(r, "streams"))} bodies' first MiB taken by the gateway; ` +
          `answered ${count(f, "answeredByGateway")}, streams closed by the gateway ${count(f, "closedByGateway")}, ` +
          `connection closed ${count(f, "sessionClosed") ? "yes" : "no"}`,
        attacker: { ready, final }
      }
    }
  },
  {
    name: "h2-tokenless",
    attack: `push port: ${fmt(scaled(200_000))} tokenless Push calls, 4 connections × 100 in flight`,
    run: async ({ gateway }) => {
      const attacker = new Attacker({
        attack: "h2-tokenless",
        port: gateway.grpc,
        calls: scaled(200_000),
        connections: 4,
        window: 100,
        timeoutMs: 120_000
      })
      try {
        const done = await attacker.done(130_000)
        return {
          saw: `${fmt(count(done, "answered"))}/${fmt(count(done, "calls"))} answered in ${(count(done, "elapsedMs") / 1000).toFixed(1)} s ` +
            `(${fmt(count(done, "answeredPerSecond"))}/s; grpc-status ${codes((done?.statuses ?? {}) as Record<string, number>)}); ` +
            `errors ${codes((done?.errors ?? {}) as Record<string, number>)}`,
          attacker: done
        }
      } finally {
        await attacker.stop()
      }
    }
  },
  {
    name: "h2-noread",
    attack: `push port, with the token: up to ${fmt(scaled(200_000))} Push calls on one connection that is never read, for ${holdMs / 1000} s, held 5 s more`,
    run: async ({ gateway }) => {
      const attacker = new Attacker({
        attack: "h2-noread",
        port: gateway.grpc,
        token: INTERNAL_TOKEN,
        calls: scaled(200_000),
        durationMs: holdMs
      })
      try {
        const ready = await attacker.ready(holdMs + 30_000)
        await sleep(5_000)
        const final = await attacker.stop()
        const stoppedAt = count(ready, "gatewayStoppedReadingAtMs")
        return {
          saw: `${fmt(count(ready, "callsWritten"))} calls written (${(count(ready, "bytesWritten") / 1e6).toFixed(1)} MB) in ${(count(ready, "writeMs") / 1000).toFixed(1)} s; ` +
            `gateway ${stoppedAt < 0 ? "kept reading" : `stopped reading after ${(stoppedAt / 1000).toFixed(1)} s`}; ` +
            `connection closed by the gateway ${count(final, "closedByGateway") ? "yes" : "no"}`,
          attacker: { ready, final }
        }
      } finally {
        await attacker.stop()
      }
    }
  },
  {
    name: "login-brute",
    attack: "logins: wrong passwords for one username from 8 addresses × 4 in flight for 10 s; its owner logs in from a 9th at 3 s",
    setup: async (gateway) => ({ victim: await register(gateway.http, "victim", "127.0.0.6") }),
    run: async ({ gateway }) => {
      const addresses = Array.from({ length: 8 }, (_, i) => `127.3.0.${i + 1}`)
      const attacker = new Attacker({ attack: "login-brute", port: gateway.http, username: "victim", addresses, concurrency: 4, durationMs: 10_000 })
      try {
        await sleep(3_000)
        const owner = await login(gateway.http, "victim", PASSWORD, "127.0.0.7")
        const done = await attacker.done(60_000)
        return {
          saw: `${fmt(count(done, "attempts"))} guesses (${codes((done?.statuses ?? {}) as Record<string, number>)}); ` +
            `owner: ${owner.status === 200 ? "logged in" : `refused ${owner.status}`} after ${Math.round(owner.ms)} ms`,
          attacker: done,
          realUsersOk: owner.status === 200,
          realUsers: { status: owner.status, ms: round1(owner.ms), body: owner.body.slice(0, 200) }
        }
      } finally {
        await attacker.stop()
      }
    }
  },
  {
    name: "login-burst",
    attack: `logins: a burst of ${fmt(scaled(500))} wrong-password logins (distinct usernames) from 5 addresses; 5 real users log in from their own`,
    setup: async (gateway) => {
      const tokens: Record<string, string> = {}
      for (let i = 0; i < 5; i++) tokens[`real${i}`] = await register(gateway.http, `real${i}`, `127.0.0.${20 + i}`)
      return tokens
    },
    run: async ({ gateway }) => {
      const addresses = Array.from({ length: 5 }, (_, i) => `127.3.1.${i + 1}`)
      const attacker = new Attacker({ attack: "login-burst", port: gateway.http, count: scaled(500), addresses })
      try {
        await attacker.ready(30_000)
        // The real users come while the burst is being answered: 100 ms after it started, 300 ms apart.
        const real = await Promise.all(Array.from({ length: 5 }, async (_, i) => {
          await sleep(100 + 300 * i)
          return login(gateway.http, `real${i}`, PASSWORD, `127.0.0.${20 + i}`)
        }))
        const done = await attacker.done(120_000)
        const inCount = real.filter((reply) => reply.status === 200).length
        const refused: Record<string, number> = {}
        for (const reply of real) if (reply.status !== 200) refused[String(reply.status)] = (refused[String(reply.status)] ?? 0) + 1
        return {
          saw: `burst answered in ${(count(done, "elapsedMs") / 1000).toFixed(1)} s (${codes((done?.statuses ?? {}) as Record<string, number>)}); ` +
            `real users in ${inCount}/5${inCount < 5 ? ` (refused ${codes(refused)})` : ""}, slowest ${Math.round(Math.max(...real.map((reply) => reply.ms)))} ms`,
          attacker: done,
          realUsersOk: inCount === 5,
          realUsers: real.map((reply) => ({ status: reply.status, ms: round1(reply.ms), ...(reply.status === 200 ? {} : { body: reply.body.slice(0, 200) }) }))
        }
      } finally {
        await attacker.stop()
      }
    }
  }
]

// ---------------------------------------------------------------------------------------------

interface RowResult {
  readonly name: string
  readonly attack: string
  readonly healthz: { readonly keepAlive: Latency; readonly newConnection: Latency }
  readonly pulse: PulseSummary
  readonly peakFds: number
  readonly fdLimit: number
  readonly peakRssBytes: number
  readonly rssAtStartBytes: number
  readonly gatewayCpuSeconds: number
  readonly gatewayDied: string | undefined
  /** What the gateway wrote (warnings and worse): count of EMFILE mentions, lines, the last 3,000 characters. */
  readonly gatewayLog: { readonly emfile: number; readonly lines: number; readonly tail: string }
  /** The bystander's own event-loop delay, max: a stall of the measuring process inflates what it measures. */
  readonly bystanderLoopLagMaxMs: number
  /** Kernel counters over the window (all listeners of the machine): SYNs or connections dropped by full queues. */
  readonly listenQueue: { readonly overflows: number; readonly syncookies: number }
  readonly windowMs: number
  readonly saw: string
  readonly realUsers: unknown
  readonly attacker: unknown
  readonly pass: boolean
  readonly failed: ReadonlyArray<string>
  /** [ms into the window, descriptors, RSS bytes] every 200 ms. */
  readonly samples: ReadonlyArray<readonly [number, number, number]>
}

const runRow = async (row: RowSpec): Promise<RowResult> => {
  const gateway = await startGateway(row.name)
  let bystander: Bystander | undefined
  try {
    const bystanderToken = await register(gateway.http, "bystander", "127.0.0.2")
    const tokens = { bystander: bystanderToken, ...(await row.setup?.(gateway)) }
    bystander = new Bystander(gateway.http, bystanderToken)
    await bystander.start()
    // Warm-up, not measured: first requests compile the routes.
    await sleep(2_000)
    const sampler = new Sampler(gateway.child.pid)
    const cpuBefore = cpuSeconds(gateway.child.pid)
    const queueBefore = listenQueueCounters()
    const started = performance.now()
    bystander.begin()
    sampler.begin()
    let outcome: Outcome
    try {
      outcome = await row.run({ gateway, tokens })
    } catch (error) {
      outcome = { saw: `bench error: ${error instanceof Error ? error.message : String(error)}`, attacker: undefined, realUsersOk: false }
    }
    // The gateway's recovery, measured: 2 s after the attackers are gone.
    await sleep(2_000)
    const windowMs = performance.now() - started
    const seen = await bystander.end()
    const peaks = await sampler.end()
    const queueAfter = listenQueueCounters()
    const died = gateway.died
    const cpu = died === undefined ? cpuSeconds(gateway.child.pid) - cpuBefore : Number.NaN
    const log = Fs.existsSync(gateway.logFile) ? Fs.readFileSync(gateway.logFile, "utf8") : ""
    const failed: Array<string> = []
    // A crash names its error: the first "…Error…" line the gateway wrote.
    const crash = died === undefined ? undefined : /^\S*Error\S*.*$/m.exec(log)?.[0]?.slice(0, 120)
    const diedAfter = gateway.diedAt === undefined ? "" : ` ${((gateway.diedAt - started) / 1000).toFixed(1)} s into the row`
    if (died !== undefined) failed.push(`gateway ${died}${diedAfter}${crash === undefined ? "" : `: ${crash}`}`)
    for (const [label, latency] of [["/healthz keep-alive", seen.keepAlive], ["/healthz new conn", seen.fresh]] as const) {
      if (!(latency.p99 <= P99_BOUND_MS)) failed.push(`${label} p99`)
      if (latency.failures > 0) failed.push(`${label} failures`)
    }
    if (!(seen.pulse.p99 <= P99_BOUND_MS)) failed.push("pulse p99")
    if (seen.pulse.missing > 0) failed.push("pulses missing")
    if (peaks.peakFds >= fdLimit) failed.push("descriptors at the limit")
    if (peaks.peakRss > RSS_BOUND) failed.push("RSS")
    if (outcome.realUsersOk === false) failed.push("real users refused")
    return {
      name: row.name,
      attack: row.attack,
      healthz: { keepAlive: seen.keepAlive, newConnection: seen.fresh },
      pulse: seen.pulse,
      peakFds: peaks.peakFds,
      fdLimit,
      peakRssBytes: peaks.peakRss,
      rssAtStartBytes: peaks.rssAtStart,
      gatewayCpuSeconds: round1(cpu),
      gatewayDied: died,
      gatewayLog: { emfile: (log.match(/EMFILE/g) ?? []).length, lines: log.split("\n").length - 1, tail: log.slice(-3_000) },
      bystanderLoopLagMaxMs: seen.ownLoopLagMaxMs,
      listenQueue: { overflows: queueAfter.overflows - queueBefore.overflows, syncookies: queueAfter.syncookies - queueBefore.syncookies },
      windowMs: Math.round(windowMs),
      saw: outcome.saw,
      realUsers: outcome.realUsers,
      attacker: outcome.attacker,
      pass: failed.length === 0,
      failed,
      samples: sampler.samples
    }
  } finally {
    bystander?.close()
    await stopGateway(gateway)
  }
}

const mb = (bytes: number) => `${Math.round(bytes / (1024 * 1024))} MB`
const ms = (value: number) => (Number.isNaN(value) ? "–" : `${value}`)

const commit = (() => {
  try {
    const git = (...args: Array<string>) => execFileSync("git", ["-C", repoRoot, ...args], { encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] }).trim()
    return `${git("rev-parse", "--short", "HEAD")}${git("status", "--porcelain", "--", "src") !== "" ? " (src modified)" : ""}`
  } catch {
    return "unknown"
  }
})()

const main = async () => {
  const selected = only === undefined ? rows : rows.filter((row) => only.includes(row.name))
  if (only !== undefined && selected.length !== only.length) {
    throw new Error(`--only: known rows are ${rows.map((row) => row.name).join(", ")}`)
  }
  const results: Array<RowResult> = []
  try {
    for (const row of selected) {
      process.stderr.write(`abuse: ${row.name}: ${row.attack}…\n`)
      const result = await runRow(row)
      const { samples: _samples, attacker: _attacker, ...brief } = result
      process.stderr.write(`  ${JSON.stringify(brief)}\n`)
      results.push(result)
    }
  } finally {
    killAll()
  }
  const header = [
    "attack",
    "/healthz p99 ms (keep-alive / new)",
    "/healthz failures",
    "pulse p99 ms",
    "pulses missing",
    "peak fds / limit",
    "peak RSS",
    "bystander's own stall",
    "attacker saw",
    "verdict"
  ]
  const body = results.map((r) => [
    r.attack,
    `${ms(r.healthz.keepAlive.p99)} / ${ms(r.healthz.newConnection.p99)}`,
    `${r.healthz.keepAlive.failures} / ${r.healthz.newConnection.failures}`,
    ms(r.pulse.p99),
    `${r.pulse.missing}/${r.pulse.sent + r.pulse.dueWhileDown}`,
    `${fmt(r.peakFds)} / ${fmt(r.fdLimit)}`,
    mb(r.peakRssBytes),
    `${Math.round(r.bystanderLoopLagMaxMs)} ms`,
    r.saw,
    r.pass ? "pass" : `FAIL (${r.failed.join(", ")})`
  ])
  process.stdout.write(`${table(header, body)}\n`)
  const resultsDir = Path.join(repoRoot, "bench/results")
  Fs.mkdirSync(resultsDir, { recursive: true })
  const json = JSON.stringify({
      at: new Date().toISOString(),
      commit,
      scale,
      holdMs,
      bounds: { p99Ms: P99_BOUND_MS, timeoutMs: TIMEOUT_MS, rssBytes: RSS_BOUND, fdLimit },
      machine: { cores: Os.availableParallelism(), node: process.version },
      gateway: { nodeFlags: startFlags, settings: { ...gatewaySettings, RESONANCE_INTERNAL_TOKEN: "(set)" } },
      rows: results
    }, null, 2)
  // One line per sample: [ms, descriptors, RSS bytes].
  Fs.writeFileSync(Path.join(resultsDir, "abuse.json"), `${json.replace(/\[\s+(\d+),\s+(\d+),\s+(\d+)\s+\]/g, "[$1, $2, $3]")}\n`)
  const failing = results.filter((r) => !r.pass).length
  process.stdout.write(failing === 0 ? `all ${results.length} rows pass\n` : `FAILING ROWS: ${failing} of ${results.length}\n`)
  process.exit(failing === 0 ? 0 : 1)
}

main().catch((error) => {
  process.stderr.write(`abuse failed: ${error instanceof Error ? error.stack : String(error)}\n`)
  killAll()
  process.exit(2)
})
