/**
 * `npm run faults`: faults as an operator meets them, driven from outside against real processes
 * (gateways as `npm start` runs them, the reference Logic, a real etcd), each in a process group of
 * its own and signalled as a group. Clients chat the whole time and follow the official web
 * client's reconnect rule; afterwards every message a client got a successful ack for is looked up
 * in the stored history. Prints a table (fault, what clients saw, sent, acked, stored, lost, time
 * to recover) and writes bench/results/faults.json; exits 1 if any acked message was lost.
 */
import * as Fs from "node:fs"
import * as Net from "node:net"
import * as Os from "node:os"
import * as Path from "node:path"
import { WebSocket } from "ws"
import { directSessionId } from "../src/domain/Session.js"
import { portOpen } from "../test/support/cluster.js"
import { OfficialRuleClient } from "../test/support/official-client.js"
import type { Child } from "./procs.js"
import { freePort, killAll, repoRoot, sleep, spawnChild, startNode, waitFor, npmStartFlags } from "./procs.js"
import { table } from "./report.js"

const seconds = (ms: number) => `${(ms / 1000).toFixed(1)} s`
const work = Fs.mkdtempSync(Path.join(Os.tmpdir(), "resonance-faults-"))

const startFlags = npmStartFlags()

// ---------------------------------------------------------------------------------------------
// Processes, each the leader of its own process group.

interface GatewayPorts {
  readonly http: number
  readonly grpc: number
  readonly metrics: number
}

const gatewayPorts = async (): Promise<GatewayPorts> => ({ http: await freePort(), grpc: await freePort(), metrics: await freePort() })

const startGateway = async (ports: GatewayPorts, env: Record<string, string>): Promise<Child> => {
  const child = startNode({
    name: "gateway",
    entry: "src/main.ts",
    nodeFlags: startFlags,
    detached: true,
    env: {
      RESONANCE_SERVICE_HOST: "127.0.0.1",
      RESONANCE_LOG_LEVEL: "warn",
      ...env,
      RESONANCE_SERVICE_HTTP_PORT: String(ports.http),
      RESONANCE_SERVICE_GRPC_PORT: String(ports.grpc),
      RESONANCE_OBSERVABILITY_METRICS_PORT: String(ports.metrics)
    }
  })
  await waitFor("gateway ready", async () => (await fetch(`http://127.0.0.1:${ports.http}/readyz`)).status === 200, 30_000, child)
  return child
}

const startLogic = async (port: number, env: Record<string, string>): Promise<Child> => {
  const child = startNode({
    name: "logic",
    entry: "src/logic-main.ts",
    detached: true,
    env: { RESONANCE_SERVICE_HOST: "127.0.0.1", RESONANCE_LOG_LEVEL: "warn", ...env, RESONANCE_SERVICE_GRPC_PORT: String(port) }
  })
  await waitFor("logic listening", () => portOpen(port), 30_000, child)
  return child
}

interface Etcd {
  readonly endpoint: string
  proc: Child
  readonly start: (options?: { readonly wipe?: boolean }) => Promise<void>
}

const startEtcd = async (): Promise<Etcd> => {
  const [clientPort, peerPort] = [await freePort(), await freePort()]
  const dataDir = Path.join(work, `etcd-${clientPort}`)
  const endpoint = `http://127.0.0.1:${clientPort}`
  const peer = `http://127.0.0.1:${peerPort}`
  const etcd: Etcd = {
    endpoint,
    proc: undefined as unknown as Child,
    start: async (options = {}) => {
      if (options.wipe === true) Fs.rmSync(dataDir, { recursive: true, force: true })
      etcd.proc = spawnChild("etcd", [
        "--name", "default", "--data-dir", dataDir,
        "--listen-client-urls", endpoint, "--advertise-client-urls", endpoint,
        "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer, "--initial-cluster", `default=${peer}`,
        "--heartbeat-interval", "50", "--election-timeout", "250", "--log-level", "warn", "--logger", "zap"
      ], { name: "etcd", detached: true, cwd: work })
      await waitFor(
        "etcd healthy",
        async () => ((await (await fetch(`${endpoint}/health`)).json()) as { health?: string }).health === "true",
        20_000,
        etcd.proc
      )
    }
  }
  await etcd.start()
  return etcd
}

/** Keys under a prefix, through etcd's JSON gateway (v3.4: /v3/kv/range, base64 keys). */
const etcdKeys = async (endpoint: string, prefix: string): Promise<Array<string>> => {
  const b64 = (text: string) => Buffer.from(text).toString("base64")
  const end = prefix.slice(0, -1) + String.fromCharCode(prefix.charCodeAt(prefix.length - 1) + 1)
  const response = await fetch(`${endpoint}/v3/kv/range`, {
    method: "POST",
    body: JSON.stringify({ key: b64(prefix), range_end: b64(end), keys_only: true })
  })
  const body = (await response.json()) as { kvs?: Array<{ key: string }> }
  return (body.kvs ?? []).map((kv) => Buffer.from(kv.key, "base64").toString())
}

// ---------------------------------------------------------------------------------------------
// Clients.

const connectCall = async (baseUrl: string, path: string, body: unknown, token?: string): Promise<any> => {
  const response = await fetch(`${baseUrl}${path}`, {
    method: "POST",
    headers: { "content-type": "application/json", ...(token !== undefined ? { authorization: `Bearer ${token}` } : {}) },
    body: JSON.stringify(body)
  })
  const text = await response.text()
  if (response.status !== 200) throw new Error(`${path}: ${response.status} ${text}`)
  return JSON.parse(text)
}

const register = async (baseUrl: string, username: string): Promise<string> =>
  (await connectCall(baseUrl, "/resonance.gateway.v1.AuthService/Register", { username, password: "secret-pw", nickname: username }))
    .accessToken

/**
 * A chat client that reconnects as the official web client does (the test suite's
 * `OfficialRuleClient`); it remembers every chat it sent and how each was answered.
 */
class Chatter {
  private readonly socket: OfficialRuleClient
  /** seq → content */
  readonly sent = new Map<string, string>()
  /** seq → msg_id of a successful ack */
  readonly acked = new Map<string, string>()
  /** seq → error of an ack that refused */
  readonly refused = new Map<string, string>()
  private counter = 0
  /** The closes of this phase: from `reset` until `stop` (whose own close is ours, not the fault's). */
  private closesFrom = 0
  private closesUntil: number | undefined = undefined

  constructor(
    readonly username: string,
    readonly token: string,
    url: string,
    readonly sessionId: string,
    private tag: string
  ) {
    this.socket = new OfficialRuleClient(url, token, (packet) => {
      if (packet.payload?.$case !== "ack") return
      const ack = packet.payload.value
      if (!this.sent.has(ack.refSeq)) return
      if (ack.error === "") this.acked.set(ack.refSeq, ack.msgId.toString())
      else this.refused.set(ack.refSeq, ack.error)
    })
  }

  get open() {
    return this.socket.open
  }

  get opens() {
    return this.socket.opens
  }

  get closes(): ReadonlyArray<number> {
    return this.socket.closes.slice(this.closesFrom, this.closesUntil).map((close) => close.code)
  }

  /** Sends the next chat when the socket is open, as the web client does. */
  sendNext(content = ""): boolean {
    const seq = `${this.tag}-${this.username}-${this.counter + 1}`
    const text = content === "" ? `${seq} hello` : `${seq} ${content}`
    const sent = this.socket.send({
      seq,
      payload: { $case: "chat", value: { sessionId: this.sessionId, fromUsername: "", toUsername: "", content: text, type: "text", timestamp: 0n } }
    })
    if (sent) {
      this.counter++
      this.sent.set(seq, text)
    }
    return sent
  }

  /** Starts a new phase: what was sent and answered so far is forgotten (the socket is kept). */
  reset(tag: string) {
    this.tag = tag
    this.counter = 0
    this.sent.clear()
    this.acked.clear()
    this.refused.clear()
    this.closesFrom = this.socket.closes.length
  }

  stop() {
    this.closesUntil = this.socket.closes.length
    this.socket.stop()
  }
}

/** Pairs of users, each pair one direct session, all sending `perSecond` chats while `running`. */
const chatters = async (baseUrl: string, wsUrl: string, prefix: string, pairs: number): Promise<Array<Chatter>> => {
  const result: Array<Chatter> = []
  for (let i = 0; i < pairs; i++) {
    const a = `${prefix}a${i}`
    const b = `${prefix}b${i}`
    const session = directSessionId(a, b)
    result.push(new Chatter(a, await register(baseUrl, a), wsUrl, session, prefix))
    result.push(new Chatter(b, await register(baseUrl, b), wsUrl, session, prefix))
  }
  await waitFor("clients connected", async () => result.every((c) => c.open), 10_000)
  return result
}

/** Every chatter sends `perSecond` (below the default per-user limit) until the returned stop is called. */
const keepChatting = (clients: ReadonlyArray<Chatter>, perSecond: number) => {
  const timer = setInterval(() => {
    for (const client of clients) client.sendNext()
  }, 1000 / perSecond)
  return () => clearInterval(timer)
}

/** All stored messages of the sessions, read back page by page through the gateway's HTTP API. */
const storedMessages = async (baseUrl: string, clients: ReadonlyArray<Chatter>) => {
  const bySession = new Map<string, Chatter>()
  for (const client of clients) if (!bySession.has(client.sessionId)) bySession.set(client.sessionId, client)
  const ids = new Map<string, string>() // msg_id → content
  let duplicates = 0
  for (const [sessionId, reader] of bySession) {
    const contents = new Set<string>()
    let before = "0"
    for (;;) {
      const page = await connectCall(
        baseUrl,
        "/resonance.gateway.v1.SessionService/GetHistoryMessages",
        { sessionId, limit: "100", beforeSeq: before },
        reader.token
      )
      const messages: Array<{ msgId: string; seqId: string; content: string }> = page.messages ?? []
      for (const message of messages) {
        ids.set(message.msgId, message.content)
        if (contents.has(message.content)) duplicates++
        contents.add(message.content)
      }
      if (messages.length === 0 || messages[0]!.seqId === "1") break
      before = messages[0]!.seqId
      await sleep(25) // under the per-user SessionService limit
    }
  }
  return { ids, duplicates }
}

interface Outcome {
  readonly fault: string
  readonly clientsSaw: string
  readonly sent: number
  readonly acked: number
  readonly stored: number
  readonly lost: number
  readonly recover: string
}

/** Counts what the clients were told against what was stored. */
const account = async (baseUrl: string, clients: ReadonlyArray<Chatter>) => {
  const { ids, duplicates } = await storedMessages(baseUrl, clients)
  let sent = 0
  let acked = 0
  let refused = 0
  let lost = 0
  const ours = new Set<string>()
  for (const client of clients) {
    sent += client.sent.size
    acked += client.acked.size
    refused += client.refused.size
    for (const content of client.sent.values()) ours.add(content)
    for (const msgId of client.acked.values()) if (!ids.has(msgId)) lost++
  }
  const stored = [...ids.values()].filter((content) => ours.has(content)).length
  return { sent, acked, refused, stored, lost, duplicates, unanswered: sent - acked - refused }
}

const closeSummary = (clients: ReadonlyArray<Chatter>) => {
  const counts = new Map<number, number>()
  for (const client of clients) for (const code of client.closes) counts.set(code, (counts.get(code) ?? 0) + 1)
  return [...counts].map(([code, count]) => `${code}×${count}`).join(" ") || "no close"
}

const firstAckAfter = async (clients: ReadonlyArray<Chatter>, since: number, timeoutMs: number): Promise<number> => {
  const before = clients.map((client) => client.acked.size)
  await waitFor("a successful ack", async () => clients.some((client, i) => client.acked.size > before[i]!), timeoutMs)
  return Date.now() - since
}

// ---------------------------------------------------------------------------------------------
// Faults.

const embeddedEnv = (name: string): Record<string, string> => ({
  RESONANCE_EMBEDDED_DATABASE_PATH: Path.join(work, name, "resonance.db"),
  RESONANCE_SHUTDOWN_DRAIN_SECONDS: "1"
})

/**
 * An embedded gateway's process group gets `kill -9`, or SIGTERM twice 200 ms apart (npm forwards
 * its own copy), mid-chat; its supervisor starts it again on the same ports and database.
 */
const restartEmbedded = async (how: "kill" | "term"): Promise<Outcome> => {
  const ports = await gatewayPorts()
  const env = embeddedEnv(how)
  let gateway = await startGateway(ports, env)
  const base = `http://127.0.0.1:${ports.http}`
  const clients = await chatters(base, `ws://127.0.0.1:${ports.http}/ws`, how, 10)
  const stop = keepChatting(clients, 5)
  await sleep(3_000)
  const signalledAt = Date.now()
  if (how === "kill") {
    gateway.signalGroup("SIGKILL")
  } else {
    gateway.signalGroup("SIGTERM")
    await sleep(200)
    gateway.signalGroup("SIGTERM")
  }
  const exitCode = await gateway.exited
  const exitedAfter = Date.now() - signalledAt
  gateway = await startGateway(ports, env)
  const recovered = await firstAckAfter(clients, signalledAt, 30_000)
  await waitFor("every client back", async () => clients.every((c) => c.open), 30_000)
  await sleep(2_000)
  stop()
  await sleep(1_000)
  const counts = await account(base, clients)
  for (const client of clients) client.stop()
  gateway.signalGroup("SIGTERM")
  await gateway.exited
  const seen = `${closeSummary(clients)}; reconnected ${clients.filter((c) => c.opens > 1).length}/${clients.length}; ${counts.refused} refused, ${counts.unanswered} unanswered, ${counts.duplicates} dup`
  return {
    fault: how === "kill"
      ? "kill -9 of an embedded gateway (process group) mid-chat, restarted"
      : "SIGTERM ×2 to an embedded gateway's process group mid-chat, restarted",
    clientsSaw: how === "kill" ? seen : `exit ${exitCode} after ${seconds(exitedAfter)}; ${seen}`,
    sent: counts.sent,
    acked: counts.acked,
    stored: counts.stored,
    lost: counts.lost,
    recover: `${seconds(recovered)} (the official client retries 3 s after a close)`
  }
}

/** A client that stops reading while others flood it: it is cut off, nobody else waits, nothing acked is lost. */
const slowReader = async (): Promise<Outcome> => {
  const ports = await gatewayPorts()
  const gateway = await startGateway(ports, embeddedEnv("slow"))
  const base = `http://127.0.0.1:${ports.http}`
  const wsUrl = `ws://127.0.0.1:${ports.http}/ws`
  const slowToken = await register(base, "slow")
  const slowSocket = new WebSocket(`${wsUrl}?token=${slowToken}`)
  await new Promise((resolve) => slowSocket.once("open", resolve))
  const slowClosed = new Promise<{ code: number }>((resolve) => slowSocket.once("close", (code) => resolve({ code })))
  const senders: Array<Chatter> = []
  for (let i = 0; i < 8; i++) {
    const name = `flood${i}`
    senders.push(new Chatter(name, await register(base, name), wsUrl, directSessionId(name, "slow"), "f"))
  }
  const bystanders = await chatters(base, wsUrl, "s", 2)
  await waitFor("senders connected", async () => senders.every((c) => c.open), 10_000)
  // The slow client's kernel buffers fill, then the gateway's queue for it.
  ;(slowSocket as unknown as { _socket: Net.Socket })._socket.pause()
  const floodStarted = Date.now()
  const big = "x".repeat(60 * 1024)
  const flood = setInterval(() => {
    for (const sender of senders) sender.sendNext(big)
  }, 100)
  const stopBystanders = keepChatting(bystanders, 5)
  // The cut-off as the gateway counts it: the slow client itself sees nothing until it reads again.
  const cutOff = waitFor("the slow client cut off", async () => {
    const text = await (await fetch(`http://127.0.0.1:${ports.metrics}/metrics`)).text()
    return /gateway_websocket_connections_rejected_total\{reason="slow_consumer"\} [1-9]/.test(text)
  }, 8_000).then(() => Date.now() - floodStarted, () => undefined)
  await sleep(8_000)
  clearInterval(flood)
  const cutOffAfter = await cutOff
  stopBystanders()
  await sleep(1_000)
  ;(slowSocket as unknown as { _socket: Net.Socket })._socket.resume()
  const closed = await Promise.race([slowClosed, sleep(5_000).then(() => undefined)])
  const floodCounts = await account(base, senders)
  const bystanderCounts = await account(base, bystanders)
  for (const client of [...senders, ...bystanders]) client.stop()
  slowSocket.terminate()
  gateway.signalGroup("SIGTERM")
  await gateway.exited
  return {
    fault: "a client stops reading during a flood (8 senders × 60 KiB at the per-user limit)",
    clientsSaw: `slow reader: ${closed === undefined ? "still open" : `closed ${closed.code} (seen when it read again)`}; senders ${floodCounts.refused} refused (rate limit); bystanders ${bystanderCounts.acked}/${bystanderCounts.sent} acked, ${closeSummary(bystanders)}`,
    sent: floodCounts.sent + bystanderCounts.sent,
    acked: floodCounts.acked + bystanderCounts.acked,
    stored: floodCounts.stored + bystanderCounts.stored,
    lost: floodCounts.lost + bystanderCounts.lost,
    recover: cutOffAfter === undefined ? "not cut off" : `cut off ${seconds(cutOffAfter)} into the flood`
  }
}

/** Cluster mode: etcd, the reference Logic, one gateway; Logic and etcd fail under it, then the gateway itself. */
const cluster = async (): Promise<Array<Outcome>> => {
  const outcomes: Array<Outcome> = []
  const etcd = await startEtcd()
  const token = "faults-internal-token-0123456789abcdef"
  const common = {
    RESONANCE_ETCD_ENDPOINTS: etcd.endpoint,
    RESONANCE_INTERNAL_TOKEN: token,
    RESONANCE_REGISTRY_DEFAULT_TTL: "5s"
  }
  const logicPort = await freePort()
  const logicEnv = { ...common, RESONANCE_EMBEDDED_DATABASE_PATH: Path.join(work, "logic", "logic.db") }
  let logic = await startLogic(logicPort, logicEnv)
  await waitFor("logic registered", async () => (await etcdKeys(etcd.endpoint, "/resonance/services/logic-service/")).length > 0, 20_000)
  const ports = await gatewayPorts()
  const gateway = await startGateway(ports, { ...common, RESONANCE_LOGIC_TIMEOUT: "2s", RESONANCE_SHUTDOWN_DRAIN_SECONDS: "1" })
  const base = `http://127.0.0.1:${ports.http}`
  const gatewayKey = async () => (await etcdKeys(etcd.endpoint, "/resonance/services/gateway-service/"))[0]
  await waitFor("gateway registered", async () => (await gatewayKey()) !== undefined, 20_000)
  const registeredAs = (await gatewayKey())!
  // One set of users for every phase (registering more would run into the per-address limit).
  const clients = await chatters(base, `ws://127.0.0.1:${ports.http}/ws`, "c", 10)

  // Logic killed and restarted mid-chat.
  {
    for (const client of clients) client.reset("logic")
    const stop = keepChatting(clients, 5)
    await sleep(3_000)
    const killedAt = Date.now()
    logic.signalGroup("SIGKILL")
    await logic.exited
    await sleep(3_000)
    logic = await startLogic(logicPort, logicEnv)
    const recovered = await firstAckAfter(clients, killedAt, 30_000)
    await sleep(2_000)
    stop()
    await sleep(2_500)
    const counts = await account(base, clients)
    outcomes.push({
      fault: "Logic killed (kill -9, group) for 3 s mid-chat, restarted",
      clientsSaw: `${counts.refused} acked with an error while it was down; ${closeSummary(clients)}; ${counts.unanswered} unanswered, ${counts.duplicates} dup`,
      sent: counts.sent,
      acked: counts.acked,
      stored: counts.stored,
      lost: counts.lost,
      recover: `${seconds(recovered)} after the kill`
    })
  }

  // etcd killed and restarted (same data, then empty) mid-chat.
  for (const wipe of [false, true]) {
    for (const client of clients) client.reset(wipe ? "etcd-empty" : "etcd")
    const stop = keepChatting(clients, 5)
    await sleep(2_000)
    etcd.proc.signalGroup("SIGKILL")
    await etcd.proc.exited
    await sleep(3_000)
    const restartedAt = Date.now()
    await etcd.start({ wipe })
    await waitFor("the gateway registered again under the same id", async () => (await gatewayKey()) === registeredAs, 30_000)
    const recovered = Date.now() - restartedAt
    await waitFor("logic registered again", async () => (await etcdKeys(etcd.endpoint, "/resonance/services/logic-service/")).length > 0, 30_000)
    await sleep(2_000)
    stop()
    await sleep(1_000)
    const counts = await account(base, clients)
    outcomes.push({
      fault: `etcd killed for 3 s mid-chat, restarted ${wipe ? "empty" : "on its data"}`,
      clientsSaw: `${closeSummary(clients)}; ${counts.refused} refused, ${counts.unanswered} unanswered, ${counts.duplicates} dup`,
      sent: counts.sent,
      acked: counts.acked,
      stored: counts.stored,
      lost: counts.lost,
      recover: `${registeredAs.split("/").at(-1)} back ${seconds(recovered)} after etcd`
    })
  }

  // The gateway itself: SIGKILL of its group leaves etcd within one TTL.
  for (const client of clients) client.stop()
  {
    const killedAt = Date.now()
    gateway.signalGroup("SIGKILL")
    await gateway.exited
    await waitFor("the entry of the killed gateway gone", async () => (await gatewayKey()) === undefined, 15_000)
    const gone = Date.now() - killedAt
    const second = await startGateway(await gatewayPorts(), { ...common, RESONANCE_SHUTDOWN_DRAIN_SECONDS: "0.5" })
    await waitFor("second gateway registered", async () => (await gatewayKey()) !== undefined, 20_000)
    const termAt = Date.now()
    second.signalGroup("SIGTERM")
    await waitFor("the entry of the stopped gateway gone", async () => (await gatewayKey()) === undefined, 15_000)
    const termGone = Date.now() - termAt
    const exitCode = await second.exited
    outcomes.push({
      fault: "gateway kill -9 / SIGTERM (process group), registry.default_ttl=5s",
      clientsSaw: `SIGTERM: exit ${exitCode}`,
      sent: 0,
      acked: 0,
      stored: 0,
      lost: 0,
      recover: `entry gone ${seconds(gone)} after kill -9, ${seconds(termGone)} after SIGTERM`
    })
  }

  logic.signalGroup("SIGTERM")
  await logic.exited
  etcd.proc.signalGroup("SIGTERM")
  await etcd.proc.exited
  return outcomes
}

const main = async () => {
  const outcomes: Array<Outcome> = []
  const run = async (name: string, fault: () => Promise<Outcome | Array<Outcome>>) => {
    process.stderr.write(`faults: ${name}…\n`)
    const result = await fault()
    for (const outcome of Array.isArray(result) ? result : [result]) {
      process.stderr.write(`  ${JSON.stringify(outcome)}\n`)
      outcomes.push(outcome)
    }
  }
  try {
    await run("kill -9 of an embedded gateway", () => restartEmbedded("kill"))
    await run("SIGTERM to an embedded gateway", () => restartEmbedded("term"))
    await run("a client that stops reading", slowReader)
    await run("Logic and etcd outages, cluster registration", cluster)
  } finally {
    killAll()
    Fs.rmSync(work, { recursive: true, force: true })
  }
  const header = ["fault", "clients saw", "sent", "acked", "stored", "lost", "recover"]
  const body = outcomes.map((o) => [o.fault, o.clientsSaw, String(o.sent), String(o.acked), String(o.stored), String(o.lost), o.recover])
  process.stdout.write(`${table(header, body)}\n`)
  const resultsDir = Path.join(repoRoot, "bench/results")
  Fs.mkdirSync(resultsDir, { recursive: true })
  Fs.writeFileSync(Path.join(resultsDir, "faults.json"), `${JSON.stringify({ at: new Date().toISOString(), outcomes }, null, 2)}\n`)
  const lost = outcomes.reduce((sum, o) => sum + o.lost, 0)
  process.stdout.write(lost === 0 ? "lost acked messages: 0\n" : `LOST ACKED MESSAGES: ${lost}\n`)
  process.exit(lost === 0 ? 0 : 1)
}

main().catch((error) => {
  process.stderr.write(`faults failed: ${error instanceof Error ? error.stack : String(error)}\n`)
  killAll()
  process.exit(2)
})
