import { describe, expect, it } from "@effect/vitest"
import { Deferred, Effect, Exit, Layer, Scope } from "effect"
import { ConnectionHub } from "../../src/application/ConnectionHub.js"
import { PushDelivery } from "../../src/application/PushDelivery.js"
import { WebSocketGateway } from "../../src/adapters/ws/WebSocketGateway.js"
import { CloseCodes } from "../../src/domain/Connection.js"
import { logicError } from "../../src/domain/Errors.js"
import type { PushMessage } from "../../src/domain/Model.js"
import type { WsPacket } from "../../src/gen/gateway/v1/packet.js"
import type { TestClient } from "../support/gateway.js"
import { connectClient, promise, serverPort, testGateway, tokenFor, upgradeStatus } from "../support/gateway.js"

const message = (content: string): PushMessage => ({
  msgId: 1n,
  seqId: 1n,
  sessionId: "single:alice:bob",
  fromUsername: "bob",
  toUsername: "alice",
  content,
  type: "text",
  timestamp: 1700000000n,
  sessionMeta: { name: "bob", type: 1 }
})

const chat = (seq: string, content = "hello"): WsPacket => ({
  seq,
  payload: {
    $case: "chat",
    value: { sessionId: "single:alice:bob", fromUsername: "eve", toUsername: "bob", content, type: "text", timestamp: 0n }
  }
})

const isAck = (seq: string) => (p: WsPacket) => p.payload?.$case === "ack" && p.seq === seq

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

const until = async (check: () => boolean, timeoutMs = 5_000) => {
  const started = Date.now()
  while (!check()) {
    if (Date.now() - started > timeoutMs) throw new Error("condition not reached in time")
    await sleep(10)
  }
}

describe("WebSocket adapter", () => {
  it.scopedLive("refuses an upgrade without a valid token with 401 before any socket opens", () =>
    Effect.gen(function*() {
      const port = yield* serverPort
      const hub = yield* ConnectionHub
      expect(yield* promise(() => upgradeStatus(port))).toBe(401)
      expect(yield* promise(() => upgradeStatus(port, { token: "forged" }))).toBe(401)
      expect(yield* promise(() => upgradeStatus(port, { headers: { authorization: "Bearer nope" } }))).toBe(401)
      expect(hub.connectionCount).toBe(0)
    }).pipe(Effect.provide(testGateway())))

  it.scopedLive("answers 503 when Logic cannot validate the token", () =>
    Effect.gen(function*() {
      const port = yield* serverPort
      expect(yield* promise(() => upgradeStatus(port, { token: tokenFor("alice") }))).toBe(503)
    }).pipe(
      Effect.provide(testGateway({ logic: { validateToken: () => Effect.fail(logicError("unavailable", "down")) } }))
    ))

  it.scopedLive("in a storm, upgrades past what Logic is asked at once wait their turn instead of being refused; past the queue, 503", () => {
    let asked = 0
    let release: () => void = () => {}
    const gate = new Promise<void>((resolve) => (release = resolve))
    return Effect.gen(function*() {
      const port = yield* serverPort
      const hub = yield* ConnectionHub
      const attempts = ["a", "b", "c", "d"].map((user) => upgradeStatus(port, { token: tokenFor(user) }))
      // One is with Logic, two wait, the fourth finds the queue full.
      yield* promise(() => until(() => asked === 1))
      const refused = yield* promise(() => Promise.race([...attempts.map((attempt) => attempt.then((status) => status === 503 ? 503 : 0))]))
      expect(refused).toBe(503)
      release()
      const statuses = (yield* promise(() => Promise.all(attempts))).sort()
      expect(statuses).toEqual([101, 101, 101, 503])
      expect(asked).toBe(3)
      yield* promise(() => until(() => hub.connectionCount === 0))
    }).pipe(Effect.provide(testGateway({
      config: { ws_config: { upgrade_concurrency: 1, upgrade_queue: 2 } },
      logic: {
        validateToken: (token) =>
          Effect.promise(() => {
            asked++
            return gate
          }).pipe(Effect.as({ username: token.slice(4), nickname: "", avatarUrl: "" }))
      }
    })))
  })

  it.scopedLive("refuses other paths with 404", () =>
    Effect.gen(function*() {
      const port = yield* serverPort
      expect(yield* promise(() => upgradeStatus(port, { token: tokenFor("a"), path: "/socket" }))).toBe(404)
    }).pipe(Effect.provide(testGateway())))

  it.scopedLive("accepts a token from the query or the Authorization header and answers pulses", () =>
    Effect.gen(function*() {
      const port = yield* serverPort
      const byQuery = yield* promise(() => connectClient(port, { token: tokenFor("alice") }))
      const byHeader = yield* promise(() => connectClient(port, { headers: { authorization: `Bearer ${tokenFor("bob")}` } }))
      byQuery.send({ seq: "p1", payload: { $case: "pulse", value: {} } })
      byHeader.send({ seq: "p2", payload: { $case: "pulse", value: {} } })
      expect((yield* promise(() => byQuery.next())).seq).toBe("p1")
      expect((yield* promise(() => byHeader.next())).payload?.$case).toBe("pulse")
      const hub = yield* ConnectionHub
      expect([...hub.users()].sort()).toEqual(["alice", "bob"])
    }).pipe(Effect.provide(testGateway())))

  it.scopedLive("acks a chat with the Logic ids and the authenticated sender", () => {
    const senders: Array<string> = []
    return Effect.gen(function*() {
      const port = yield* serverPort
      const client = yield* promise(() => connectClient(port, { token: tokenFor("alice") }))
      client.send(chat("c-1"))
      const ack = yield* promise(() => client.next(isAck("c-1")))
      expect(ack.payload).toEqual({
        $case: "ack",
        value: { refSeq: "c-1", msgId: 99n, seqId: 5n, sessionId: "single:alice:bob", error: "" }
      })
      expect(senders).toEqual(["alice"])
    }).pipe(
      Effect.provide(
        testGateway({
          logic: {
            sendMessage: (c) => Effect.sync(() => (senders.push(c.fromUsername), { msgId: 99n, seqId: 5n }))
          }
        })
      )
    )
  })

  it.scopedLive("acks in order for many chats on one socket", () => {
    let n = 0
    return Effect.gen(function*() {
      const port = yield* serverPort
      const client = yield* promise(() => connectClient(port, { token: tokenFor("alice") }))
      for (let i = 0; i < 30; i++) client.send(chat(`m${i}`))
      yield* promise(() => client.next(isAck("m29")))
      const seqs = client.packets.filter((p) => p.payload?.$case === "ack").map((p) => p.seq)
      expect(seqs).toEqual(Array.from({ length: 30 }, (_, i) => `m${i}`))
    }).pipe(
      Effect.provide(
        testGateway({
          // Every chat reaches Logic: none is refused by the per-user rate.
          config: { limits: { messages_per_second: 0 } },
          logic: {
            sendMessage: () =>
              Effect.suspend(() => {
                const id = ++n
                return Effect.as(Effect.sleep(`${id % 3} millis`), { msgId: BigInt(id), seqId: BigInt(id) })
              })
          }
        })
      )
    )
  })

  it.scopedLive("delivers a push to every device of the user, in order, in every frame length form", () =>
    Effect.gen(function*() {
      const port = yield* serverPort
      const phone = yield* promise(() => connectClient(port, { token: tokenFor("alice") }))
      const laptop = yield* promise(() => connectClient(port, { token: tokenFor("alice") }))
      const push = yield* PushDelivery
      const report = yield* push.deliver(["alice", "carol"], message("hi there"))
      expect(report.failedUsernames).toEqual(["carol"])
      // Packets of < 126, < 65,536 and ≥ 65,536 bytes: each header form of a prepared frame.
      const contents = ["hi there", "m".repeat(300), "l".repeat(70_000), "again"]
      for (const content of contents.slice(1)) yield* push.deliver(["alice"], message(content))
      for (const device of [phone, laptop]) {
        for (const content of contents) {
          const packet = yield* promise(() => device.next((p) => p.payload?.$case === "push"))
          expect(packet.payload?.$case === "push" && packet.payload.value.content).toBe(content)
        }
      }
    }).pipe(Effect.provide(testGateway())))

  it.scopedLive("closes with 1009 when a frame exceeds max_message_size", () =>
    Effect.gen(function*() {
      const port = yield* serverPort
      const client = yield* promise(() => connectClient(port, { token: tokenFor("alice") }))
      client.send(chat("big", "x".repeat(70 * 1024)))
      const closed = yield* promise(() => client.closed)
      expect(closed.code).toBe(1009)
      const hub = yield* ConnectionHub
      yield* promise(() => until(() => hub.connectionCount === 0))
    }).pipe(Effect.provide(testGateway({ config: { ws_config: { max_message_size: 65536 } } }))))

  it.scopedLive("closes with 1007 on a malformed frame and 1003 on a text frame; the server keeps serving", () =>
    Effect.gen(function*() {
      const port = yield* serverPort
      const bad = yield* promise(() => connectClient(port, { token: tokenFor("alice") }))
      bad.ws.send(Buffer.from([0x0a, 0xff, 0xff, 0xff, 0xff]))
      expect((yield* promise(() => bad.closed)).code).toBe(1007)
      const text = yield* promise(() => connectClient(port, { token: tokenFor("alice") }))
      text.ws.send("{\"seq\":\"1\"}")
      expect((yield* promise(() => text.closed)).code).toBe(1003)
      const good = yield* promise(() => connectClient(port, { token: tokenFor("alice") }))
      good.send({ seq: "ok", payload: { $case: "pulse", value: {} } })
      expect((yield* promise(() => good.next())).seq).toBe("ok")
    }).pipe(Effect.provide(testGateway())))

  it.scopedLive("an unknown packet type with a seq gets an error ack and the socket stays open", () =>
    Effect.gen(function*() {
      const port = yield* serverPort
      const client = yield* promise(() => connectClient(port, { token: tokenFor("alice") }))
      client.ws.send(Buffer.from([0x0a, 0x01, 0x39, 0xa2, 0x01, 0x00]))
      const ack = yield* promise(() => client.next(isAck("9")))
      expect(ack.payload?.$case === "ack" && ack.payload.value.error).toBe("unknown packet type")
      client.send({ seq: "after", payload: { $case: "pulse", value: {} } })
      expect((yield* promise(() => client.next((p) => p.seq === "after"))).payload?.$case).toBe("pulse")
    }).pipe(Effect.provide(testGateway())))

  it.scopedLive("pings clients and drops one that answers no ping within pong_timeout", () =>
    Effect.gen(function*() {
      const port = yield* serverPort
      const lively = yield* promise(() => connectClient(port, { token: tokenFor("alice") }))
      let pings = 0
      lively.ws.on("ping", () => pings++)
      const silent = yield* promise(() => connectClient(port, { token: tokenFor("bob"), autoPong: false }))
      const closed = yield* promise(() => silent.closed)
      expect(closed.code).toBe(1006)
      expect(pings).toBeGreaterThanOrEqual(2)
      expect(lively.ws.readyState).toBe(lively.ws.OPEN)
    }).pipe(Effect.provide(testGateway({ config: { ws_config: { ping_interval: "100ms", pong_timeout: "350ms" } } }))))

  it.scopedLive("disconnects a client that stops reading while pushes flood, with bounded buffering", () =>
    Effect.gen(function*() {
      const port = yield* serverPort
      const slow = yield* promise(() => connectClient(port, { token: tokenFor("alice") }))
      const socket = (slow.ws as unknown as { _socket: { pause(): void } })._socket
      socket.pause()
      const push = yield* PushDelivery
      const hub = yield* ConnectionHub
      const big = message("y".repeat(16 * 1024))
      let failedAt = -1
      for (let i = 0; i < 5_000 && failedAt < 0; i++) {
        const report = push.deliverNow(["alice"], big)
        if (report.failedUsernames.length > 0) failedAt = i
        // Pacing, not a wait: a turn of the event loop now and then lets the socket write what it can.
        if (i % 50 === 0) yield* promise(() => sleep(1))
      }
      expect(failedAt).toBeGreaterThan(0)
      yield* promise(() => until(() => hub.connectionCount === 0))
    }).pipe(Effect.provide(testGateway({ config: { ws_config: { send_buffer_limit: 262144 } } }))))

  it.scopedLive("limits connections per IP with 429 and globally with 503", () =>
    Effect.gen(function*() {
      const port = yield* serverPort
      const clients: Array<TestClient> = []
      for (let i = 0; i < 3; i++) clients.push(yield* promise(() => connectClient(port, { token: tokenFor(`u${i}`) })))
      expect(yield* promise(() => upgradeStatus(port, { token: tokenFor("u4") }))).toBe(429)
      const gateway = yield* WebSocketGateway
      clients[0]!.ws.close()
      yield* promise(() => clients[0]!.closed)
      // The server lets go of the address when it has seen the close too.
      yield* promise(() => until(() => gateway.connectionCount() === 2))
      clients.push(yield* promise(() => connectClient(port, { token: tokenFor("u5") })))
    }).pipe(Effect.provide(testGateway({ config: { limits: { max_connections_per_ip: 3 } } }))))

  it.scopedLive("refuses upgrades past the global limit with 503", () =>
    Effect.gen(function*() {
      const port = yield* serverPort
      yield* promise(() => connectClient(port, { token: tokenFor("a") }))
      yield* promise(() => connectClient(port, { token: tokenFor("b") }))
      expect(yield* promise(() => upgradeStatus(port, { token: tokenFor("c") }))).toBe(503)
    }).pipe(Effect.provide(testGateway({ config: { limits: { max_connections: 2 } } }))))

  it.scopedLive("closes the oldest device with 4002 when a user exceeds max_devices_per_user", () =>
    Effect.gen(function*() {
      const port = yield* serverPort
      const first = yield* promise(() => connectClient(port, { token: tokenFor("alice") }))
      yield* promise(() => connectClient(port, { token: tokenFor("alice") }))
      const third = yield* promise(() => connectClient(port, { token: tokenFor("alice") }))
      expect((yield* promise(() => first.closed)).code).toBe(CloseCodes.DeviceLimit)
      const hub = yield* ConnectionHub
      yield* promise(() => until(() => hub.connectionsOf("alice")?.size === 2))
      expect(third.ws.readyState).toBe(third.ws.OPEN)
    }).pipe(Effect.provide(testGateway({ config: { limits: { max_devices_per_user: 2 } } }))))

  it.scopedLive("refuses a denied address with 403", () =>
    Effect.gen(function*() {
      const port = yield* serverPort
      expect(yield* promise(() => upgradeStatus(port, { token: tokenFor("a") }))).toBe(403)
    }).pipe(Effect.provide(testGateway({ config: { security: { ip_deny: ["127.0.0.1"] } } }))))

  it.scopedLive("closes a connection whose token expires with 4001", () => {
    // Whole seconds: +1 could leave a few milliseconds late in a second, and the upgrade be refused.
    const exp = Math.floor(Date.now() / 1000) + 2
    const b64 = (v: object) => Buffer.from(JSON.stringify(v)).toString("base64url")
    const token = `${b64({ alg: "HS256" })}.${b64({ sub: "jwt-user", exp })}.sig`
    return Effect.gen(function*() {
      const port = yield* serverPort
      const client = yield* promise(() => connectClient(port, { token }))
      const closed = yield* promise(() => client.closed)
      expect(closed).toEqual({ code: CloseCodes.TokenExpired, reason: "token expired", wasClean: true })
    }).pipe(Effect.provide(testGateway()))
  })

  const drainScenario = (closeMode: "clean" | "reconnect") =>
    Effect.gen(function*() {
      const scope = yield* Scope.make()
      // Logic answers the in-flight chat only when the test says so: the drain has to wait for it.
      const chatReached = yield* Deferred.make<void>()
      const answerChat = yield* Deferred.make<void>()
      const context = yield* Layer.buildWithScope(
        testGateway({
          config: { shutdown: { drain_seconds: 0.2, close_mode: closeMode } },
          logic: {
            sendMessage: () =>
              Deferred.succeed(chatReached, undefined).pipe(
                Effect.zipRight(Deferred.await(answerChat)),
                Effect.as({ msgId: 1n, seqId: 1n })
              )
          }
        }),
        scope
      )
      const gateway = context.pipe((ctx) => ctx.unsafeMap.get(WebSocketGateway.key) as WebSocketGateway["Type"])
      const port = yield* Effect.provide(serverPort, context)
      const a = yield* promise(() => connectClient(port, { token: tokenFor("alice") }))
      const b = yield* promise(() => connectClient(port, { token: tokenFor("bob") }))
      a.send(chat("in-flight"))
      yield* Deferred.await(chatReached)
      const closing = yield* Effect.fork(Scope.close(scope, Exit.void))
      // b, with nothing pending, is closed in its turn of the drain; a waits for its chat's answer.
      const closedB = yield* promise(() => b.closed)
      // The server counts b out when it has seen the end too; a stays until its chat is answered.
      yield* promise(() => until(() => gateway.connectionCount() === 1))
      expect(a.ws.readyState).toBe(a.ws.OPEN)
      expect(yield* promise(() => upgradeStatus(port, { token: tokenFor("carol") }))).toBe(503)
      expect(a.packets.some(isAck("in-flight"))).toBe(false)
      yield* Deferred.succeed(answerChat, undefined)
      const closedA = yield* promise(() => a.closed)
      expect(a.packets.some(isAck("in-flight"))).toBe(true)
      yield* closing.await
      return [closedA, closedB] as const
    })

  it.live("close_mode clean: on shutdown clients get 1012, pending chats are answered, new upgrades refused", () =>
    Effect.gen(function*() {
      const closes = yield* drainScenario("clean")
      for (const closed of closes) expect(closed).toMatchObject({ code: 1012, wasClean: true })
    }))

  it.live("close_mode reconnect: the drain ends sockets uncleanly, which the official client reconnects after", () =>
    Effect.gen(function*() {
      const closes = yield* drainScenario("reconnect")
      // The web client's rule is `if (!event.wasClean) reconnect()`.
      for (const closed of closes) expect(closed).toMatchObject({ code: 1006, wasClean: false })
    }))

  it.scopedLive("permessage-deflate is off by default and negotiable when enabled", () =>
    Effect.gen(function*() {
      const port = yield* serverPort
      const client = yield* promise(() => connectClient(port, { token: tokenFor("alice"), perMessageDeflate: true }))
      expect(client.ws.extensions).toBe("")
    }).pipe(Effect.provide(testGateway())))

  it.scopedLive("with compression enabled a client that offers deflate gets it, and frames still flow", () =>
    Effect.gen(function*() {
      const port = yield* serverPort
      const client = yield* promise(() => connectClient(port, { token: tokenFor("alice"), perMessageDeflate: true }))
      expect(client.ws.extensions).toContain("permessage-deflate")
      const push = yield* PushDelivery
      yield* push.deliver(["alice"], message("z".repeat(4096)))
      const packet = yield* promise(() => client.next((p) => p.payload?.$case === "push"))
      expect(packet.payload?.$case === "push" && packet.payload.value.content.length).toBe(4096)
      const plain = yield* promise(() => connectClient(port, { token: tokenFor("bob") }))
      expect(plain.ws.extensions).toBe("")
    }).pipe(
      Effect.provide(testGateway({ config: { ws_config: { compression: { enabled: true, threshold: 1024, concurrency_limit: 2 } } } }))
    ))
})

