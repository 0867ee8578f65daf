import { afterAll, beforeAll, describe, expect, it } from "vitest"
import * as grpc from "@grpc/grpc-js"
import { Etcd3 } from "etcd3"
import * as Fs from "node:fs"
import * as Path from "node:path"
import type { WsPacket } from "../../src/gen/gateway/v1/packet.js"
import type { PushRequest } from "../../src/gen/gateway/v1/push.js"
import { auth, session } from "../support/client.js"
import { chat, push as pushTo, registered as registeredIn, startReferenceLogic } from "../support/cluster.js"
import type { EtcdProcess } from "../support/etcd.js"
import { startEtcd } from "../support/etcd.js"
import type { TestClient } from "../support/gateway.js"
import { connectClient } from "../support/gateway.js"
import type { GatewayProcess, RunningProcess } from "../support/process.js"
import { freePort, startGateway, tempDir, waitFor } from "../support/process.js"
import { directSessionId } from "../../src/domain/Session.js"
import { OfficialMessageList } from "../support/official-client.js"

let etcd: EtcdProcess
let etcdClient: Etcd3
let logic: RunningProcess
let logicPort: number
let gw1: GatewayProcess
let gw2: GatewayProcess
const dataDir = tempDir("resonance-cluster-")

const internalToken = "cluster-internal-token-0123456789"

const clusterEnv = () => ({
  RESONANCE_INTERNAL_TOKEN: internalToken,
  RESONANCE_ETCD_ENDPOINTS: etcd.endpoint,
  RESONANCE_REGISTRY_DEFAULT_TTL: "2s",
  RESONANCE_LOGIC_TIMEOUT: "1500ms",
  RESONANCE_SERVICE_HOST: "127.0.0.1"
})

const startLogic = (env: Record<string, string> = {}) =>
  startReferenceLogic(etcdClient, logicPort, {
    ...clusterEnv(),
    RESONANCE_EMBEDDED_DATABASE_PATH: Path.join(dataDir, "logic.db"),
    ...env
  })

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, Math.max(0, ms)))

/** Resolves with the time of the next registration of a Logic instance in etcd. */
const nextLogicRegistration = async (): Promise<number> => {
  const watcher = await etcdClient.watch().prefix("/resonance/services/logic-service/").create()
  return new Promise((resolve) =>
    watcher.on("put", () => {
      resolve(Date.now())
      void watcher.cancel()
    })
  )
}

/**
 * Starts the shared Logic again and, 100 ms after it is registered in etcd (not once the harness
 * has seen it serve), sends one chat from `client`: its ack.
 */
const restartLogicThenChat = async (client: TestClient, sessionId: string, seq: string, env: Record<string, string> = {}) => {
  const registration = nextLogicRegistration()
  const starting = startLogic(env)
  try {
    await sleep((await registration) + 100 - Date.now())
    client.send(chat(seq, sessionId, "logic is back"))
    return await ackOf(client, seq, 10_000)
  } finally {
    // The other tests share Logic: whatever happened, this is the running one.
    logic = await starting
  }
}

const registered = (service: string) => registeredIn(etcdClient, service)

/** PushService.Push as the Task service calls it: with the cluster's internal token, or as `token` says. */
const push = (port: number, request: PushRequest, token: string | null = internalToken) =>
  pushTo(`127.0.0.1:${port}`, request, token)

const ackOf = (client: TestClient, seq: string, timeoutMs = 5_000) =>
  client.next((p) => p.payload?.$case === "ack" && p.seq === seq, timeoutMs).then((p) => (p.payload as { value: any }).value)

const running = (process: RunningProcess) => process.child.exitCode === null && process.child.signalCode === null

let users = 0
/** A user of its own for one test (each test runs alone), registered through `gateway`. */
const freshUser = async (gateway: GatewayProcess, prefix: string) => {
  const username = `${prefix}-${++users}`
  const response = await auth(gateway.url, "Register", { username, password: "secret-pw" })
  expect(response.status, JSON.stringify(response.body)).toBe(200)
  return { username, token: response.body.accessToken as string }
}

describe("cluster mode: two gateways, the reference Logic and a real etcd", () => {
  beforeAll(async () => {
    etcd = await startEtcd()
    etcdClient = new Etcd3({ hosts: etcd.endpoint })
    logicPort = await freePort()
    logic = await startLogic()
    gw1 = await startGateway(clusterEnv())
    gw2 = await startGateway(clusterEnv())
  }, 120_000)

  afterAll(async () => {
    await Promise.all([gw1?.stop("SIGKILL"), gw2?.stop("SIGKILL"), logic?.stop("SIGKILL")])
    etcdClient?.close()
    await etcd?.stop()
    Fs.rmSync(dataDir, { recursive: true, force: true })
  })

  it("registers each process in etcd with the contract's key and JSON", async () => {
    const gateways = await registered("gateway-service")
    expect(Object.keys(gateways).sort()).toEqual([
      "/resonance/services/gateway-service/gateway-service-001",
      "/resonance/services/gateway-service/gateway-service-002"
    ])
    const endpoints = Object.values(gateways).map((g: any) => g.endpoints[0]).sort()
    expect(endpoints).toEqual([`grpc://127.0.0.1:${gw1.grpcPort}`, `grpc://127.0.0.1:${gw2.grpcPort}`].sort())
    for (const entry of Object.values(gateways) as Array<any>) {
      expect(entry).toEqual({
        id: expect.stringMatching(/^gateway-service-00[12]$/),
        name: "gateway-service",
        version: expect.any(String),
        metadata: { http_addr: expect.stringMatching(/^127\.0\.0\.1:\d+$/), ws_addr: expect.stringMatching(/^127\.0\.0\.1:\d+$/) },
        endpoints: [expect.stringMatching(/^grpc:\/\/127\.0\.0\.1:\d+$/)]
      })
    }
    const logics = await registered("logic-service")
    expect(Object.values(logics).map((l: any) => l.endpoints[0])).toEqual([`grpc://127.0.0.1:${logicPort}`])
  })

  it("a message from a user on gateway 1 reaches a user on gateway 2 and is acked", async () => {
    const [aliceUser, bobUser] = [await freshUser(gw1, "alice"), await freshUser(gw2, "bob")]
    const alice = await connectClient(gw1.httpPort, { token: aliceUser.token })
    const bob = await connectClient(gw2.httpPort, { token: bobUser.token })
    const created = await session(gw1.url, "CreateSession", { members: [bobUser.username], type: 1 }, aliceUser.token)
    const sessionId = directSessionId(aliceUser.username, bobUser.username)
    expect(created.body.sessionId).toBe(sessionId)
    // Presence reaches Logic in batches (100 ms): wait until bob's gateway is known.
    let delivered = false
    for (let attempt = 0; attempt < 30 && !delivered; attempt++) {
      alice.send(chat(`a${attempt}`, sessionId, `hello ${attempt}`))
      const ack = await ackOf(alice, `a${attempt}`)
      expect(ack.error).toBe("")
      delivered = await bob
        .next((p) => p.payload?.$case === "push" && p.payload.value.content === `hello ${attempt}`, 300)
        .then(() => true, () => false)
    }
    expect(delivered).toBe(true)
    bob.send(chat("b1", sessionId, "hi from gateway 2"))
    expect((await ackOf(bob, "b1")).error).toBe("")
    const atAlice = await alice.next((p) => p.payload?.$case === "push" && p.payload.value.content === "hi from gateway 2")
    expect(atAlice.payload?.$case === "push" && atAlice.payload.value.fromUsername).toBe(bobUser.username)
    alice.ws.close()
    bob.ws.close()
  }, 30_000)

  it("Push to a mixed online/offline list reports exactly the users not connected here", async () => {
    const [aliceUser, bobUser] = [await freshUser(gw1, "alice"), await freshUser(gw1, "bob")]
    const alice = await connectClient(gw1.httpPort, { token: aliceUser.token })
    // A chat through gateway 1, so its ChatService/SendMessage calls to Logic are counted below.
    alice.send(chat("counted", "0", "counted"))
    expect((await ackOf(alice, "counted")).error).toBe("")
    const response = await push(gw1.grpcPort, {
      toUsernames: [aliceUser.username, bobUser.username, "nobody"],
      message: {
        msgId: 123n, seqId: 1n, sessionId: directSessionId(aliceUser.username, bobUser.username), fromUsername: bobUser.username, toUsername: aliceUser.username,
        content: "pushed", type: "text", timestamp: 1n, sessionMeta: undefined
      }
    })
    expect(response.msgId).toBe(123n)
    expect([...response.failedUsernames].sort()).toEqual([bobUser.username, "nobody"].sort())
    const metrics = await (await fetch(`http://127.0.0.1:${gw1.metricsPort}/metrics`)).text()
    expect(metrics).toMatch(/gateway_grpc_requests_total\{method="PushService\/Push",code="OK"\} [1-9]/)
    expect(metrics).toMatch(/gateway_grpc_requests_total\{method="ChatService\/SendMessage",code="OK"\} [1-9]/)
    expect(metrics).toMatch(/gateway_push_failed_total [1-9]/)
    await alice.next((p) => p.payload?.$case === "push" && p.payload.value.content === "pushed")
    alice.ws.close()
  })

  it("a Push without the internal token, or with a guessed one, is refused and reaches nobody", async () => {
    const aliceUser = await freshUser(gw1, "alice")
    const alice = await connectClient(gw1.httpPort, { token: aliceUser.token })
    const forged = {
      toUsernames: [aliceUser.username],
      message: {
        msgId: 666n, seqId: 1n, sessionId: "0", fromUsername: "admin", toUsername: "",
        content: "forged system notice", type: "system", timestamp: 4_102_444_800n, sessionMeta: undefined
      }
    }
    for (const token of [null, "guess"]) {
      const error = await push(gw1.grpcPort, forged, token).then(() => undefined, (e: grpc.ServiceError) => e)
      expect(error?.code).toBe(grpc.status.UNAUTHENTICATED)
    }
    // A chat's push arrives after anything the forgery could have delivered: it never came.
    alice.send(chat("after-forgery", "0", "marker"))
    await alice.next((p) => p.payload?.$case === "ack" && p.seq === "after-forgery")
    expect(alice.packets.some((p) => p.payload?.$case === "push" && p.payload.value.content === "forged system notice")).toBe(false)
    alice.ws.close()
  })

  it("Logout through gateway 1 closes the socket on gateway 2 with 4001 within a second; gateway 2 refuses the token, restarted too", async () => {
    const bob = await freshUser(gw1, "bob")
    const login = await auth(gw1.url, "Login", { username: bob.username, password: "secret-pw" })
    const token: string = login.body.accessToken
    const onGw2 = await connectClient(gw2.httpPort, { token })
    const closed = onGw2.closed.then((event) => ({ ...event, at: Date.now() }))
    const loggedOut = await fetch(`${gw1.url}/resonance.gateway.v1.AuthService/Logout`, {
      method: "POST",
      headers: { "content-type": "application/json", authorization: `Bearer ${token}` },
      body: "{}"
    })
    const loggedOutAt = Date.now()
    expect(loggedOut.status).toBe(200)
    const event = await closed
    expect(event.code).toBe(4001)
    expect(event.at - loggedOutAt).toBeLessThan(1_500)
    expect((await session(gw2.url, "GetSessionList", {}, token)).status).toBe(401)
    await expect(connectClient(gw2.httpPort, { token })).rejects.toMatchObject({ status: 401 })

    try {
      await gw2.stop("SIGTERM")
      gw2 = await startGateway(clusterEnv())
      expect((await session(gw2.url, "GetSessionList", {}, token)).status).toBe(401)
      await expect(connectClient(gw2.httpPort, { token })).rejects.toMatchObject({ status: 401 })
      expect((await session(gw2.url, "GetSessionList", {}, bob.token)).status).toBe(200)
    } finally {
      // The other tests share gateway 2: leave one running whatever happened above.
      if (!running(gw2)) gw2 = await startGateway(clusterEnv())
    }
  }, 60_000)

  it("with Logic stopped chats are acked with an error, the gateway stays healthy, and it recovers", async () => {
    const [aliceUser, bobUser] = [await freshUser(gw1, "alice"), await freshUser(gw1, "bob")]
    const created = await session(gw1.url, "CreateSession", { members: [bobUser.username], type: 1 }, aliceUser.token)
    const sessionId: string = created.body.sessionId
    const alice = await connectClient(gw1.httpPort, { token: aliceUser.token })
    try {
      await logic.stop("SIGKILL")
      alice.send(chat("down-1", sessionId, "while logic is down"))
      const ack = await ackOf(alice, "down-1", 15_000).catch((error) => {
        throw new Error(`${error.message}; gateway output:\n${gw1.output().slice(-4000)}`)
      })
      expect(ack.error).not.toBe("")
      expect((await fetch(`${gw1.url}/healthz`)).status).toBe(200)
      const login = await auth(gw1.url, "Login", { username: aliceUser.username, password: "secret-pw" })
      expect(login.status).toBe(503)
      expect(login.body.code).toBe("unavailable")

      // Chats work at once: 100 ms after the new instance registers, one is stored.
      const backAck = await restartLogicThenChat(alice, sessionId, "up-1")
      expect(backAck.error, gw1.output().slice(-3000)).toBe("")
    } finally {
      // The other tests share Logic: leave it running whatever happened above.
      if (!running(logic)) logic = await startLogic()
    }
    alice.ws.close()
  }, 60_000)

  it("a Logic killed and restarted before its old entry expires serves chats 100 ms after it registers", async () => {
    const [aliceUser, bobUser] = [await freshUser(gw1, "alice"), await freshUser(gw1, "bob")]
    const created = await session(gw1.url, "CreateSession", { members: [bobUser.username], type: 1 }, aliceUser.token)
    const sessionId: string = created.body.sessionId
    const alice = await connectClient(gw1.httpPort, { token: aliceUser.token })
    try {
      // A lease that outlives the kill: the new instance registers beside the old entry, at the same address.
      await logic.stop("SIGTERM")
      logic = await startLogic({ RESONANCE_REGISTRY_DEFAULT_TTL: "30s" })
      let attempt = 0
      await waitFor(async () => {
        const seq = `before-${attempt++}`
        alice.send(chat(seq, sessionId, "logic is up"))
        return (await ackOf(alice, seq, 10_000)).error === ""
      }, 30_000, "a chat stored by the long-lease Logic")
      await logic.stop("SIGKILL")
      // Meanwhile the gateway keeps calling (chats, revocation polls) and its channel backs off.
      alice.send(chat("down", sessionId, "while logic is down"))
      expect((await ackOf(alice, "down", 15_000)).error).not.toBe("")
      const ack = await restartLogicThenChat(alice, sessionId, "back")
      // The new entry beside the old one (an earlier test's killed Logic may still be listed too).
      expect(Object.keys(await registered("logic-service")).length).toBeGreaterThanOrEqual(2)
      expect(ack.error, gw1.output().slice(-3000)).toBe("")
    } finally {
      if (!running(logic)) logic = await startLogic()
    }
    alice.ws.close()
  }, 90_000)

  it("the sender sees its own message once (official client's matching rule); its other device, on the other gateway, once too; after a reload, once each in the history", async () => {
    const [aliceUser, bobUser] = [await freshUser(gw1, "alice"), await freshUser(gw2, "bob")]
    const created = await session(gw1.url, "CreateSession", { members: [bobUser.username], type: 1 }, aliceUser.token)
    const sessionId: string = created.body.sessionId
    const phone = await connectClient(gw1.httpPort, { token: aliceUser.token })
    const laptop = await connectClient(gw2.httpPort, { token: aliceUser.token })
    const bob = await connectClient(gw2.httpPort, { token: bobUser.token })
    // Every socket has its route in Logic once a message from bob reaches both of alice's.
    let routed = false
    for (let attempt = 0; attempt < 30 && !routed; attempt++) {
      bob.send(chat(`probe-${attempt}`, sessionId, `probe ${attempt}`))
      const isProbe = (p: WsPacket) => p.payload?.$case === "push" && p.payload.value.content === `probe ${attempt}`
      routed = await Promise.all([phone.next(isProbe, 500), laptop.next(isProbe, 500)]).then(() => true, () => false)
    }
    expect(routed).toBe(true)

    const phoneList = new OfficialMessageList()
    const count = 20
    for (let i = 0; i < count; i++) {
      // As fast as a user types: some chats queue behind the one in flight.
      phoneList.send(phone, `tmp-${i}`, sessionId, `own ${i}`)
      await sleep(i % 3 === 0 ? 0 : 15)
    }
    const own = (p: WsPacket) => p.payload?.$case === "push" && p.payload.value.content.startsWith("own ")
    await waitFor(
      async () =>
        phone.packets.filter((p) => p.payload?.$case === "ack" && p.seq.startsWith("tmp-")).length === count &&
        laptop.packets.filter(own).length >= count && bob.packets.filter(own).length >= count,
      15_000,
      "every ack at the phone and every message at the laptop and at bob"
    )
    // An echo after its ack would come within this.
    await sleep(500)

    for (const packet of phone.packets) phoneList.receive(packet)
    const bubbles = phoneList.bubblesOf(sessionId).filter((b) => b.content.startsWith("own "))
    expect(bubbles.map((b) => b.content)).toEqual(Array.from({ length: count }, (_, i) => `own ${i}`))
    expect(bubbles.every((b) => b.status === "sent")).toBe(true)
    expect(new Set(bubbles.map((b) => b.msgId)).size).toBe(count)
    // Not merged into the right bubble by luck: the sending socket got no push of its own messages at all.
    expect(phone.packets.filter(own)).toEqual([])

    const laptopList = new OfficialMessageList()
    for (const packet of laptop.packets) laptopList.receive(packet)
    const onLaptop = laptopList.bubblesOf(sessionId).filter((b) => b.content.startsWith("own "))
    expect(onLaptop.map((b) => b.content)).toEqual(Array.from({ length: count }, (_, i) => `own ${i}`))
    expect(laptop.packets.filter(own)).toHaveLength(count)

    // After a reload the official client shows the session's history: each message once, with
    // the msg_id its ack gave, through either gateway.
    for (const gateway of [gw1, gw2]) {
      const page = await session(gateway.url, "GetHistoryMessages", { sessionId, limit: "100" }, aliceUser.token)
      expect(page.status).toBe(200)
      const history: Array<{ content: string; msgId: string }> = (page.body.messages ?? []).filter((m: { content: string }) =>
        m.content.startsWith("own ")
      )
      expect(history.map((m) => m.content)).toEqual(Array.from({ length: count }, (_, i) => `own ${i}`))
      expect(history.map((m) => m.msgId)).toEqual(bubbles.map((b) => b.msgId))
    }
    for (const client of [phone, laptop, bob]) client.ws.close()
  }, 60_000)

  it("a message sent 0–100 ms after the recipient's socket opened reaches it, every time", async () => {
    const aliceUser = await freshUser(gw1, "alice")
    const alice = await connectClient(gw1.httpPort, { token: aliceUser.token })
    const missed: Array<number> = []
    for (let i = 0; i < 20; i++) {
      const bobUser = await freshUser(gw2, "late")
      // As the official client: the inbox is pulled right after login, then the socket opened.
      expect((await session(gw2.url, "PullInboxDelta", { limit: "200" }, bobUser.token)).status).toBe(200)
      const bob = await connectClient(gw2.httpPort, { token: bobUser.token })
      await sleep(i * 5)
      alice.send(chat(`race-${i}`, directSessionId(aliceUser.username, bobUser.username), `race ${i}`))
      expect((await ackOf(alice, `race-${i}`)).error).toBe("")
      const pushed = await bob
        .next((p) => p.payload?.$case === "push" && p.payload.value.content === `race ${i}`, 5_000)
        .then(() => true, () => false)
      if (!pushed) missed.push(i * 5)
      bob.ws.close()
    }
    // The delays (ms) after which the message never came.
    expect(missed).toEqual([])
    alice.ws.close()
  }, 120_000)

  it("entries follow the processes: lease expiry after kill -9, immediate removal on SIGTERM", async () => {
    // Two gateways of its own: the shared ones stay up for the other tests.
    const killed = await startGateway(clusterEnv())
    const stopped = await startGateway(clusterEnv())
    try {
      const keyOf = async (gateway: GatewayProcess) => {
        await waitFor(
          async () => Object.values(await registered("gateway-service")).some((v: any) => v.endpoints[0].endsWith(`:${gateway.grpcPort}`)),
          10_000,
          "registration"
        )
        return Object.entries(await registered("gateway-service")).find(([, v]: [string, any]) => v.endpoints[0].endsWith(`:${gateway.grpcPort}`))![0]
      }
      const key2 = await keyOf(killed)
      const key1 = await keyOf(stopped)
      // registry.default_ttl=2s from the environment is the lease etcd holds.
      const kv = await etcdClient.get(key2).exec()
      const lease = await etcdClient.leaseClient.leaseTimeToLive({ ID: kv.kvs[0]!.lease })
      expect(Number(lease.grantedTTL)).toBe(2)
      await killed.stop("SIGKILL")
      expect(Object.keys(await registered("gateway-service"))).toContain(key2)
      await waitFor(async () => !Object.keys(await registered("gateway-service")).includes(key2), 10_000, "lease expiry")

      const stopping = stopped.stop("SIGTERM")
      await waitFor(async () => !Object.keys(await registered("gateway-service")).includes(key1), 1_500, "revocation on SIGTERM")
      expect(await stopping).toBe(0)
    } finally {
      await Promise.all([killed.stop("SIGKILL"), stopped.stop("SIGKILL")])
    }
  }, 30_000)
})
