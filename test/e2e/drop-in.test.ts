import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { Etcd3 } from "etcd3"
import * as Fs from "node:fs"
import * as Path from "node:path"
import { auth, session } from "../support/client.js"
import { chat, push, registered, startReferenceLogic } from "../support/cluster.js"
import type { EtcdProcess } from "../support/etcd.js"
import { startEtcd } from "../support/etcd.js"
import { connectClient } from "../support/gateway.js"
import { OfficialRuleClient } from "../support/official-client.js"
import type { GatewayProcess, RunningProcess } from "../support/process.js"
import { freePort, startGateway, tempDir, waitFor } from "../support/process.js"

/**
 * Swapping the Go gateway for this one in a deployment: its configuration folder as it is, clients
 * that reconnect the way the official web client does, and a user moving between gateways.
 */
let etcd: EtcdProcess
let etcdClient: Etcd3
let logic: RunningProcess
const dataDir = tempDir("resonance-drop-in-")
const internalToken = "drop-in-internal-token-0123456789abcdef"
const upstreamConfigs = Path.resolve(import.meta.dirname, "../fixtures/upstream-configs")

const clusterEnv = () => ({
  RESONANCE_INTERNAL_TOKEN: internalToken,
  RESONANCE_ETCD_ENDPOINTS: etcd.endpoint,
  RESONANCE_REGISTRY_DEFAULT_TTL: "2s"
})

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

/** How many SyncStatus calls `gateway` made that Logic answered: each is a presence batch Logic has applied. */
const presenceSynced = async (gateway: GatewayProcess) => {
  const text = await (await fetch(`http://127.0.0.1:${gateway.metricsPort}/metrics`)).text()
  const line = text.split("\n").find((l) => l.startsWith(`gateway_grpc_requests_total{method="PresenceService/SyncStatus",code="OK"} `))
  return line === undefined ? 0 : Number(line.split(" ").at(-1))
}

/** Resolves once `gateway` has had one more presence batch answered by Logic than `from`. */
const nextPresenceSync = (gateway: GatewayProcess, from: number, what: string) =>
  waitFor(async () => (await presenceSynced(gateway)) > from, 10_000, what)

const tokens: Record<string, string> = {}
const register = async (gateway: GatewayProcess, username: string) => {
  const response = await auth(gateway.url, "Register", { username, password: "secret-pw" })
  expect(response.status, JSON.stringify(response.body)).toBe(200)
  tokens[username] = response.body.accessToken
}

const historyContents = async (gateway: GatewayProcess, sessionId: string, token: string) => {
  const contents: Array<string> = []
  let before = "0"
  for (;;) {
    const page = await session(gateway.url, "GetHistoryMessages", { sessionId, limit: "50", beforeSeq: before }, token)
    expect(page.status).toBe(200)
    const messages: Array<{ content: string; seqId: string }> = page.body.messages ?? []
    if (messages.length === 0) return contents
    contents.push(...messages.map((m) => m.content))
    before = messages[0]!.seqId
  }
}

describe("drop-in for the Go gateway", () => {
  beforeAll(async () => {
    etcd = await startEtcd()
    etcdClient = new Etcd3({ hosts: etcd.endpoint })
    logic = await startReferenceLogic(etcdClient, await freePort(), {
      ...clusterEnv(),
      RESONANCE_EMBEDDED_DATABASE_PATH: Path.join(dataDir, "logic.db")
    })
  }, 60_000)

  afterAll(async () => {
    await logic?.stop("SIGKILL")
    etcdClient?.close()
    await etcd?.stop()
    Fs.rmSync(dataDir, { recursive: true, force: true })
  })

  it("starts from upstream's configs/gateway.yaml unchanged: cluster mode, registered with a reachable advertised host", async () => {
    const root = tempDir("resonance-upstream-root-")
    Fs.cpSync(upstreamConfigs, Path.join(root, "configs"), { recursive: true })
    // Only what a deployment sets around the file: where etcd is, the internal token, free ports.
    const gateway = await startGateway(clusterEnv(), "src/main.ts", { cwd: root, testDefaults: false })
    try {
      const output = gateway.output()
      expect(output).toContain(Path.join(root, "configs", "gateway.yaml"))
      expect(output).toContain("cluster mode")
      // log.format: console is the human-readable format, not JSON lines.
      expect(output.split("\n").some((line) => line.includes("configuration loaded") && !line.trimStart().startsWith("{"))).toBe(true)

      await waitFor(async () => Object.keys(await registered(etcdClient, "gateway-service")).length === 1, 10_000, "registration")
      const [entry] = Object.values(await registered(etcdClient, "gateway-service"))
      // service.host: localhost in upstream's file is the advertised host.
      expect(entry.endpoints).toEqual([`grpc://localhost:${gateway.grpcPort}`])
      expect(entry.metadata).toEqual({ http_addr: `localhost:${gateway.httpPort}`, ws_addr: `localhost:${gateway.httpPort}` })
      expect((await fetch(`${gateway.url}/health`)).status).toBe(200)
      expect((await fetch(`${gateway.url}/ready`)).status).toBe(200)

      // Served through the reference Logic, and Task's push reaches a socket at the advertised address.
      await register(gateway, "ursula")
      const client = await connectClient(gateway.httpPort, { token: tokens.ursula })
      const address = entry.endpoints[0].slice("grpc://".length)
      const response = await push(address, {
        toUsernames: ["ursula"],
        message: {
          msgId: 77n, seqId: 1n, sessionId: "0", fromUsername: "system", toUsername: "",
          content: "via the advertised host", type: "system", timestamp: 1n, sessionMeta: undefined
        }
      }, internalToken)
      expect([...response.failedUsernames]).toEqual([])
      const pushed = await client.next((p) => p.payload?.$case === "push")
      expect(pushed.payload?.$case === "push" && pushed.payload.value.content).toBe("via the advertised host")
      client.ws.close()
    } finally {
      expect(await gateway.stop("SIGTERM")).toBe(0)
      Fs.rmSync(root, { recursive: true, force: true })
    }
  }, 60_000)

  it("a rolling restart of two gateways: official-rule clients come back by themselves and no acked message is lost", async () => {
    const ports = async () => ({
      RESONANCE_SERVICE_HTTP_PORT: String(await freePort()),
      RESONANCE_SERVICE_GRPC_PORT: String(await freePort()),
      RESONANCE_OBSERVABILITY_METRICS_PORT: String(await freePort())
    })
    const env1 = { ...clusterEnv(), ...(await ports()) }
    const env2 = { ...clusterEnv(), ...(await ports()) }
    let gw1 = await startGateway(env1)
    let gw2 = await startGateway(env2)
    try {
      await register(gw1, "rolf")
      await register(gw2, "rita")
      const created = await session(gw1.url, "CreateSession", { members: ["rita"], type: 1 }, tokens.rolf!)
      const sessionId: string = created.body.sessionId
      const rolf = new OfficialRuleClient(`ws://127.0.0.1:${gw1.httpPort}/ws`, tokens.rolf!)
      const rita = new OfficialRuleClient(`ws://127.0.0.1:${gw2.httpPort}/ws`, tokens.rita!)
      await waitFor(async () => rolf.open && rita.open, 10_000, "both connected")

      // Both keep chatting through the restarts; an ack with no error is a promise that it is stored.
      const acked: Array<string> = []
      const pending: Array<Promise<unknown>> = []
      let n = 0
      let sending = true
      const loop = (async () => {
        while (sending) {
          for (const [name, client] of [["rolf", rolf], ["rita", rita]] as const) {
            const seq = `${name}-${n++}`
            if (client.send(chat(seq, sessionId, seq))) {
              pending.push(waitAck(client, seq).then((ok) => ok && acked.push(seq)))
            }
          }
          // The pace of two people chatting, not a wait for something.
          await sleep(300)
        }
      })()
      /** Resolves once both users have had `count` more chats acked, so each phase carries traffic. */
      const moreAcked = (count: number, what: string) => {
        const of = (name: string) => acked.filter((seq) => seq.startsWith(`${name}-`)).length
        const [rolfFrom, ritaFrom] = [of("rolf"), of("rita")]
        return waitFor(async () => of("rolf") >= rolfFrom + count && of("rita") >= ritaFrom + count, 20_000, what)
      }

      await moreAcked(2, "chats acked before the restarts")
      expect(await gw1.stop("SIGTERM")).toBe(0)
      gw1 = await startGateway(env1)
      await waitFor(async () => rolf.open && rolf.opens === 2, 20_000, "rolf reconnected to the restarted gateway 1")
      await moreAcked(2, "chats acked after gateway 1 restarted")
      expect(await gw2.stop("SIGTERM")).toBe(0)
      gw2 = await startGateway(env2)
      await waitFor(async () => rita.open && rita.opens === 2, 20_000, "rita reconnected to the restarted gateway 2")
      await moreAcked(2, "chats acked after gateway 2 restarted")
      sending = false
      await loop
      // Every chat sent is acked, refused, or its socket gone by now.
      await Promise.all(pending)

      expect(rolf.closes.every((c) => !c.wasClean)).toBe(true)
      expect(rolf.gaveUp || rita.gaveUp).toBe(false)
      expect(rolf.open && rita.open).toBe(true)
      const stored = new Set(await historyContents(gw1, sessionId, tokens.rolf!))
      expect(acked.length).toBeGreaterThan(10)
      expect(acked.filter((seq) => !stored.has(seq))).toEqual([])
      // And both sides see traffic again after the restarts.
      rolf.send(chat("after", sessionId, "after the rolling restart"))
      await waitFor(
        async () => rita.packets.some((p) => p.payload?.$case === "push" && p.payload.value.content === "after the rolling restart"),
        10_000,
        "a push after the restarts"
      )
      rolf.stop()
      rita.stop()
    } finally {
      await Promise.all([gw1.stop("SIGKILL"), gw2.stop("SIGKILL")])
    }
  }, 90_000)

  it("a user moving between gateways keeps receiving pushes: the old gateway's offline does not remove the new route", async () => {
    const gwA = await startGateway(clusterEnv())
    const gwB = await startGateway(clusterEnv())
    try {
      await register(gwA, "mona")
      await register(gwB, "sam")
      const created = await session(gwB.url, "CreateSession", { members: ["mona"], type: 1 }, tokens.sam!)
      const sessionId: string = created.body.sessionId
      const onA = await connectClient(gwA.httpPort, { token: tokens.mona })
      const sam = await connectClient(gwB.httpPort, { token: tokens.sam })
      // Mona opens the app on another device through gateway B, then closes the first one.
      // Logic knows of both first sockets, then of the second device on B, then of the first one's end.
      await Promise.all([nextPresenceSync(gwA, 0, "mona online on A"), nextPresenceSync(gwB, 0, "sam online on B")])
      const syncedB = await presenceSynced(gwB)
      const onB = await connectClient(gwB.httpPort, { token: tokens.mona })
      await nextPresenceSync(gwB, syncedB, "mona online on B")
      const syncedA = await presenceSynced(gwA)
      onA.ws.close()
      await onA.closed
      await nextPresenceSync(gwA, syncedA, "mona offline on A")
      sam.send(chat("s1", sessionId, "where are you?"))
      const ack = await sam.next((p) => p.payload?.$case === "ack" && p.seq === "s1")
      expect(ack.payload?.$case === "ack" && ack.payload.value.error).toBe("")
      const got = await onB.next((p) => p.payload?.$case === "push" && p.payload.value.content === "where are you?", 5_000)
      expect(got.payload?.$case === "push" && got.payload.value.fromUsername).toBe("sam")
      onB.ws.close()
      sam.ws.close()
    } finally {
      await Promise.all([gwA.stop("SIGKILL"), gwB.stop("SIGKILL")])
    }
  }, 60_000)
})

/**
 * Whether `seq`, just sent on the client's current socket, was acked there without an error within
 * 5 s; `false` as soon as that socket closes (an ack can only come on the socket the chat went out on).
 */
const waitAck = (client: OfficialRuleClient, seq: string) =>
  new Promise<boolean>((resolve) => {
    const ws = client.ws!
    const find = () => client.packets.find((p) => p.payload?.$case === "ack" && p.seq === seq)
    const done = (ok: boolean) => {
      clearTimeout(timer)
      ws.off("message", onMessage)
      ws.off("close", onClose)
      resolve(ok)
    }
    // The client records the frame in its own listener, added before this one.
    const onMessage = () => {
      const ack = find()
      if (ack !== undefined) done(ack.payload?.$case === "ack" && ack.payload.value.error === "")
    }
    const onClose = () => done(false)
    const timer = setTimeout(() => done(false), 5_000)
    ws.on("message", onMessage)
    ws.on("close", onClose)
    onMessage()
  })

