import { afterAll, beforeAll, describe, expect, it } from "vitest"
import * as Fs from "node:fs"
import * as Net from "node:net"
import * as Path from "node:path"
import { LoginResponse } from "../../src/gen/gateway/v1/api.js"
import type { WsPacket } from "../../src/gen/gateway/v1/packet.js"
import { auth, connectCall, session } from "../support/client.js"
import type { TestClient } from "../support/gateway.js"
import { connectClient } from "../support/gateway.js"
import type { GatewayProcess } from "../support/process.js"
import { startGateway, tempDir, waitFor } from "../support/process.js"
import { directSessionId } from "../../src/domain/Session.js"

const dataDir = tempDir("resonance-e2e-")
const env = { RESONANCE_EMBEDDED_DATABASE_PATH: Path.join(dataDir, "resonance.db") }
let gateway: GatewayProcess

const wsPort = () => gateway.httpPort

const chat = (seq: string, sessionId: string, content: string, fromUsername = ""): WsPacket => ({
  seq,
  payload: { $case: "chat", value: { sessionId, fromUsername, toUsername: "", content, type: "text", timestamp: 0n } }
})

const ackOf = (client: TestClient, seq: string) =>
  client.next((p) => p.payload?.$case === "ack" && p.seq === seq).then((p) => (p.payload as { value: any }).value)

const pushWith = (client: TestClient, content: string) =>
  client.next((p) => p.payload?.$case === "push" && p.payload.value.content === content).then(
    (p) => (p.payload as { value: any }).value
  )

const pulseRoundTrip = async (client: TestClient, seq: string) => {
  client.send({ seq, payload: { $case: "pulse", value: {} } })
  await client.next((p) => p.seq === seq)
}

let users = 0
/** A user of its own for one test (each test runs alone): registered, with its username and token. */
const freshUser = async (prefix: string) => {
  const username = `${prefix}-${++users}`
  const response = await auth(gateway.url, "Register", { username, password: "secret-pw", nickname: username.toUpperCase() })
  expect(response.status, JSON.stringify(response.body)).toBe(200)
  return { username, token: response.body.accessToken as string }
}

/** A direct session of `a` with `b`, created by `a`. */
const directSession = async (a: { username: string; token: string }, b: { username: string }) => {
  const created = await session(gateway.url, "CreateSession", { members: [b.username], type: 1 }, a.token)
  expect(created.status).toBe(200)
  expect(created.body.sessionId).toBe(directSessionId(a.username, b.username))
  return created.body.sessionId as string
}

const running = (process: GatewayProcess) => process.child.exitCode === null && process.child.signalCode === null

describe("embedded mode end to end (a real gateway process)", () => {
  beforeAll(async () => {
    gateway = await startGateway(env)
  }, 60_000)

  afterAll(async () => {
    await gateway?.stop("SIGKILL")
    Fs.rmSync(dataDir, { recursive: true, force: true })
  })

  it("registers users over Connect JSON in the shape the web client expects", async () => {
    for (const prefix of ["alice", "bob", "carol"]) {
      const username = `${prefix}-${++users}`
      const response = await auth(gateway.url, "Register", { username, password: "secret-pw", nickname: username.toUpperCase() })
      expect(response.status).toBe(200)
      expect(response.body.accessToken).toEqual(expect.any(String))
      expect(response.body.user).toMatchObject({ username, nickname: username.toUpperCase() })
    }
  })

  it("serves no Push RPC by default: nothing listens on the gRPC port", async () => {
    const refused = await new Promise<boolean>((resolve) => {
      const socket = Net.connect(gateway.grpcPort, "127.0.0.1")
      socket.once("connect", () => (socket.destroy(), resolve(false)))
      socket.once("error", () => resolve(true))
    })
    expect(refused).toBe(true)
  })

  it("logs in over Connect binary", async () => {
    const alice = await freshUser("alice")
    const name = Buffer.from(alice.username)
    const response = await fetch(`${gateway.url}/resonance.gateway.v1.AuthService/Login`, {
      method: "POST",
      headers: { "content-type": "application/proto" },
      body: Buffer.from([0x0a, name.length, ...name, 0x12, 0x09, ...Buffer.from("secret-pw")])
    })
    expect(response.status).toBe(200)
    const decoded = LoginResponse.decode(new Uint8Array(await response.arrayBuffer()))
    expect(decoded.user?.username).toBe(alice.username)
  })

  it("the web client's first calls work: GetSessionList {} and PullInboxDelta {limit:'200'}", async () => {
    const alice = await freshUser("alice")
    const list = await session(gateway.url, "GetSessionList", {}, alice.token)
    expect(list.status).toBe(200)
    expect(list.body.sessions.map((s: any) => s.sessionId)).toContain("0")
    const inbox = await session(gateway.url, "PullInboxDelta", { limit: "200" }, alice.token)
    expect(inbox.status).toBe(200)
  })

  it("two users chat across devices: acks, pushes, spoofing, non-members, history, unread, inbox", async () => {
    const [aliceUser, bobUser, carolUser] = [await freshUser("alice"), await freshUser("bob"), await freshUser("carol")]
    const alicePhone = await connectClient(wsPort(), { token: aliceUser.token })
    const aliceLaptop = await connectClient(wsPort(), { token: aliceUser.token })
    const bob = await connectClient(wsPort(), { token: bobUser.token })
    const carol = await connectClient(wsPort(), { token: carolUser.token })

    const sessionId = await directSession(aliceUser, bobUser)

    alicePhone.send(chat("a1", sessionId, "hello bob", "mallory"))
    const ack1 = await ackOf(alicePhone, "a1")
    expect(ack1.error).toBe("")
    expect(ack1.msgId).toBeGreaterThan(0n)
    const atBob = await pushWith(bob, "hello bob")
    expect(atBob.fromUsername).toBe(aliceUser.username)
    expect(atBob.msgId).toBe(ack1.msgId)
    expect(atBob.seqId).toBe(ack1.seqId)
    expect((await pushWith(aliceLaptop, "hello bob")).fromUsername).toBe(aliceUser.username)

    bob.send(chat("b1", sessionId, "hi alice"))
    const ack2 = await ackOf(bob, "b1")
    expect(ack2.seqId).toBe(ack1.seqId + 1n)
    await pushWith(alicePhone, "hi alice")
    await pushWith(aliceLaptop, "hi alice")

    carol.send(chat("c1", sessionId, "let me in"))
    expect((await ackOf(carol, "c1")).error).toBe("not a session member")

    for (let i = 0; i < 3; i++) {
      alicePhone.send(chat(`a-more-${i}`, sessionId, `more ${i}`))
      await ackOf(alicePhone, `a-more-${i}`)
    }
    // No waiting for time to pass: what each socket got after "let me in" and the echo shows nothing
    // else came before it. bob and the laptop get "more 2"; the phone and carol answer a pulse.
    await Promise.all([pushWith(bob, "more 2"), pushWith(aliceLaptop, "more 2"), pulseRoundTrip(alicePhone, "mark"), pulseRoundTrip(carol, "mark")])
    const everything = [alicePhone, aliceLaptop, bob, carol].flatMap((c) => c.packets)
    expect(everything.some((p) => p.payload?.$case === "push" && p.payload.value.content === "let me in")).toBe(false)
    expect(alicePhone.packets.some((p) => p.payload?.$case === "push" && p.payload.value.content === "hello bob")).toBe(false)

    const history = await session(gateway.url, "GetHistoryMessages", { sessionId, limit: "3" }, bobUser.token)
    expect(history.status).toBe(200)
    const seqs = history.body.messages.map((m: any) => BigInt(m.seqId))
    expect(seqs).toEqual([...seqs].sort((a: bigint, b: bigint) => (a < b ? -1 : 1)))
    expect(history.body.messages.at(-1).content).toBe("more 2")
    const older = await session(gateway.url, "GetHistoryMessages", { sessionId, limit: "10", beforeSeq: String(seqs[0]) }, bobUser.token)
    expect(older.body.messages.map((m: any) => m.content)).toContain("hello bob")

    const bobSessions = await session(gateway.url, "GetSessionList", {}, bobUser.token)
    const direct = bobSessions.body.sessions.find((s: any) => s.sessionId === sessionId)
    // bob read up to his own reply; the three later messages of alice are unread
    expect(Number(direct.unreadCount)).toBe(3)
    const read = await session(gateway.url, "UpdateReadPosition", { sessionId, seqId: direct.lastMessage.seqId }, bobUser.token)
    expect(read.status).toBe(200)
    expect(Number(read.body.unreadCount ?? 0)).toBe(0)

    const inbox = await session(gateway.url, "PullInboxDelta", { cursorId: "0", limit: "2" }, bobUser.token)
    expect(inbox.body.events).toHaveLength(2)
    expect(inbox.body.hasMore).toBe(true)
    const rest = await session(gateway.url, "PullInboxDelta", { cursorId: inbox.body.nextCursorId, limit: "200" }, bobUser.token)
    const contents = [...inbox.body.events, ...rest.body.events].map((e: any) => e.message.content)
    expect(contents).toEqual(expect.arrayContaining(["hello bob", "hi alice", "more 2"]))

    for (const client of [alicePhone, aliceLaptop, bob, carol]) client.ws.close()
    await Promise.all([alicePhone, aliceLaptop, bob, carol].map((client) => client.closed))
  })

  it("the metrics port shows all 13 metrics with their types, following the traffic", async () => {
    const scrape = async () => (await fetch(`http://127.0.0.1:${gateway.metricsPort}/metrics`)).text()
    const value = (text: string, name: string, labels = "") => {
      const line = text.split("\n").find((l) => l.startsWith(`${name}${labels} `) || (labels === "" && l.startsWith(`${name} `)))
      return line === undefined ? undefined : Number(line.split(" ").at(-1))
    }
    const [alice, bob] = [await freshUser("alice"), await freshUser("bob")]
    const sessionId = await directSession(alice, bob)
    const before = await scrape()
    const types: Record<string, string> = {
      gateway_websocket_connections_active: "gauge",
      gateway_websocket_connections_total: "counter",
      gateway_messages_pulse_total: "counter",
      gateway_messages_received_total: "counter",
      gateway_messages_sent_total: "counter",
      gateway_push_failed_total: "counter",
      gateway_http_requests_total: "counter",
      gateway_http_errors_total: "counter",
      gateway_grpc_requests_total: "counter",
      gateway_grpc_errors_total: "counter",
      gateway_push_duration_seconds: "histogram",
      gateway_http_request_duration_seconds: "histogram",
      gateway_grpc_request_duration_seconds: "histogram"
    }
    for (const [name, type] of Object.entries(types)) expect(before).toContain(`# TYPE ${name} ${type}`)

    const client = await connectClient(wsPort(), { token: alice.token })
    client.send({ seq: "m1", payload: { $case: "pulse", value: {} } })
    await client.next((p) => p.seq === "m1")
    client.send(chat("m2", sessionId, "counted"))
    await ackOf(client, "m2")
    expect((await connectCall(gateway.url, "/resonance.gateway.v1.SessionService/GetSessionList", {})).status).toBe(401)
    expect((await session(gateway.url, "GetHistoryMessages", { sessionId, limit: "1" }, bob.token)).status).toBe(200)
    const during = await scrape()
    expect(value(during, "gateway_websocket_connections_active")).toBe(1)
    expect(value(during, "gateway_messages_pulse_total")! - (value(before, "gateway_messages_pulse_total") ?? 0)).toBe(1)
    expect(value(during, "gateway_messages_received_total")! - (value(before, "gateway_messages_received_total") ?? 0)).toBe(1)
    expect(value(during, "gateway_websocket_connections_total")!).toBeGreaterThan(value(before, "gateway_websocket_connections_total") ?? 0)
    expect(value(during, "gateway_push_duration_seconds_count")!).toBeGreaterThan(value(before, "gateway_push_duration_seconds_count") ?? 0)
    // The chat's ack waited for a WAL flush, and the flush was timed.
    expect(value(during, "gateway_logic_wal_flush_duration_seconds_count")!).toBeGreaterThan(
      value(before, "gateway_logic_wal_flush_duration_seconds_count") ?? 0
    )
    // Checkpoints run from the start (one at once, for a WAL left by a crash) and are timed.
    expect(value(during, "gateway_logic_wal_checkpoint_duration_seconds_count")!).toBeGreaterThan(0)
    expect(during).toMatch(/gateway_http_requests_total\{route="\/resonance\.gateway\.v1\.SessionService\/GetHistoryMessages",code="200"\} \d+/)
    expect(during).toMatch(/gateway_http_errors_total\{route="[^"]+",code="401"\} \d+/)
    client.ws.close()
    await client.closed
    // The client's close event can come before the gateway has counted the socket out.
    await waitFor(async () => value(await scrape(), "gateway_websocket_connections_active") === 0, 5_000, "no active connection")
  })

  it("Logout closes the sockets opened with the token (4001) and the token is refused from then on", async () => {
    const carol = await freshUser("carol")
    const login = await auth(gateway.url, "Login", { username: carol.username, password: "secret-pw" })
    const phoneToken: string = login.body.accessToken
    const phone = await connectClient(wsPort(), { token: phoneToken })
    const laptop = await connectClient(wsPort(), { token: carol.token })
    const loggedOut = await connectCall(gateway.url, "/resonance.gateway.v1.AuthService/Logout", {}, phoneToken)
    expect(loggedOut.body).toEqual({ success: true })
    expect((await phone.closed).code).toBe(4001)
    expect((await session(gateway.url, "GetSessionList", {}, phoneToken)).status).toBe(401)
    await expect(connectClient(wsPort(), { token: phoneToken })).rejects.toMatchObject({ status: 401 })
    // The user's other device, logged in with another token, stays connected and served.
    laptop.send({ seq: "still-here", payload: { $case: "pulse", value: {} } })
    await laptop.next((p) => p.seq === "still-here")
    expect((await session(gateway.url, "GetSessionList", {}, carol.token)).status).toBe(200)
    laptop.ws.close()
    await laptop.closed
  })

  it("acked messages and logins survive SIGTERM and a restart on the same database", async () => {
    const [alice, bob] = [await freshUser("alice"), await freshUser("bob")]
    const sessionId = await directSession(alice, bob)
    const revoked: string = (await auth(gateway.url, "Login", { username: bob.username, password: "secret-pw" })).body.accessToken
    expect((await connectCall(gateway.url, "/resonance.gateway.v1.AuthService/Logout", {}, revoked)).body).toEqual({ success: true })
    try {
      const client = await connectClient(wsPort(), { token: alice.token })
      client.send(chat("last", sessionId, "right before shutdown"))
      const ack = await ackOf(client, "last")
      expect(ack.error).toBe("")
      const closed = client.closed
      const exitCode = await gateway.stop("SIGTERM")
      expect(exitCode).toBe(0)
      // close_mode reconnect (the default): an unclean end, so the official client comes back.
      expect(await closed).toMatchObject({ code: 1006, wasClean: false })

      gateway = await startGateway(env)
      const login = await auth(gateway.url, "Login", { username: bob.username, password: "secret-pw" })
      expect(login.status).toBe(200)
      // A token issued before the restart is still valid: the secret was kept.
      const history = await session(gateway.url, "GetHistoryMessages", { sessionId, limit: "1" }, bob.token)
      expect(history.status).toBe(200)
      expect(history.body.messages[0].content).toBe("right before shutdown")
      expect(BigInt(history.body.messages[0].msgId)).toBe(ack.msgId)
      // A token revoked before the restart stays revoked.
      expect((await session(gateway.url, "GetSessionList", {}, revoked)).status).toBe(401)
    } finally {
      // The other tests share this gateway: leave one running whatever happened above.
      if (!running(gateway)) gateway = await startGateway(env)
    }
  }, 60_000)

  it("abuse limits hold with the defaults: devices, one chat budget per user, content size, frame size, pulses", async () => {
    const { token } = await freshUser("dave")
    const devices: Array<TestClient> = []
    for (let i = 0; i < 6; i++) devices.push(await connectClient(wsPort(), { token }))
    expect((await devices[0]!.closed).code).toBe(4002)
    const live = devices.slice(1)

    // Five devices, ten chats each at once: one user's budget (burst 20, 10/s), not five.
    const seqs = live.flatMap((device, d) => Array.from({ length: 10 }, (_, i) => {
      const seq = `flood-${d}-${i}`
      device.send(chat(seq, "0", `flood ${d} ${i}`))
      return { device, seq }
    }))
    const results = await Promise.all(seqs.map(({ device, seq }) => ackOf(device, seq)))
    const accepted = results.filter((ack) => ack.error === "").length
    expect(accepted).toBeGreaterThanOrEqual(20)
    expect(accepted).toBeLessThanOrEqual(25)
    expect(results.filter((ack) => ack.error.startsWith("rate limited")).length).toBe(50 - accepted)
    for (const device of live) device.ws.close()

    // The other limits on a user whose chat budget is untouched (instead of waiting for a refill).
    const other = (await freshUser("erin")).token
    const sockets = [await connectClient(wsPort(), { token: other }), await connectClient(wsPort(), { token: other }), await connectClient(wsPort(), { token: other })]
    sockets[0]!.send(chat("too-long", "0", "x".repeat(100 * 1024)))
    expect((await ackOf(sockets[0]!, "too-long")).error).toBe("content is larger than 65536 bytes")
    sockets[1]!.send(chat("way-too-long", "0", "x".repeat(1024 * 1024)))
    expect((await sockets[1]!.closed).code).toBe(1009)

    for (let i = 0; i < 100; i++) sockets[2]!.send({ seq: `pulse-${i}`, payload: { $case: "pulse", value: {} } })
    expect((await sockets[2]!.closed).code).toBe(4008)
    expect(sockets[2]!.packets.filter((p) => p.payload?.$case === "pulse").length).toBe(10)
    for (const socket of sockets) socket.ws.close()
  }, 30_000)

  it("bad input gets precise errors and never a 500", async () => {
    const short = await auth(gateway.url, "Register", { username: `dave-${++users}`, password: "123" })
    expect(short.status).toBe(400)
    expect(short.body.code).toBe("invalid_argument")
    const alice = await freshUser("alice")
    const taken = await auth(gateway.url, "Register", { username: alice.username, password: "secret-pw" })
    expect(taken.status).toBe(409)
    const badJson = await fetch(`${gateway.url}/resonance.gateway.v1.AuthService/Login`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: "{not json"
    })
    expect(badJson.status).toBe(400)
    const noToken = await connectCall(gateway.url, "/resonance.gateway.v1.SessionService/GetSessionList", {})
    expect(noToken.status).toBe(401)
    expect(noToken.body.code).toBe("unauthenticated")
  })
})
