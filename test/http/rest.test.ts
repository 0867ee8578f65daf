import { describe, expect, it } from "@effect/vitest"
import type * as HttpServerResponse from "@effect/platform/HttpServerResponse"
import { Effect } from "effect"
import { healthRoutes } from "../../src/adapters/http/Health.js"
import { Readiness } from "../../src/application/Readiness.js"
import { bearer, call, json, serve } from "./harness.js"

describe("REST routes over the same procedures", () => {
  it.scopedLive("POST /api/v1/auth/login and /register answer the same JSON as Connect", () =>
    Effect.gen(function*() {
      const { url, calls } = yield* serve()
      const login = yield* call(url + "/api/v1/auth/login", json({ username: "alice", password: "secret1" }))
      expect(login.status).toBe(200)
      expect(login.body).toEqual({ accessToken: "token-alice", user: { username: "alice", nickname: "Alice" } })
      const register = yield* call(
        url + "/api/v1/auth/register",
        json({ username: "erin", password: "123456", nickname: "Erin" })
      )
      expect(register.body).toEqual({ accessToken: "token-erin", user: { username: "erin", nickname: "Erin" } })
      expect(calls.map((c) => c.method)).toEqual(["login", "register"])
    }))

  it.scopedLive("a REST body without a content type is read as JSON; another content type is 415", () =>
    Effect.gen(function*() {
      const { url } = yield* serve()
      const untyped = yield* call(url + "/api/v1/auth/login", {
        method: "POST",
        body: new Blob([JSON.stringify({ username: "alice", password: "secret1" })])
      })
      expect(untyped.status).toBe(200)
      const proto = yield* call(url + "/api/v1/auth/login", {
        method: "POST",
        headers: { "content-type": "application/proto" },
        body: new Uint8Array([10, 1, 97])
      })
      expect(proto.status).toBe(415)
    }))

  it.scopedLive("GET /api/v1/session/list and POST /api/v1/session/create need the bearer token", () =>
    Effect.gen(function*() {
      const { url, calls } = yield* serve()
      const anonymous = yield* call(url + "/api/v1/session/list")
      expect(anonymous.status).toBe(401)
      const list = yield* call(url + "/api/v1/session/list", { headers: bearer() })
      expect(list.status).toBe(200)
      expect(list.body.sessions[0].unreadCount).toBe("3")
      const create = yield* call(
        url + "/api/v1/session/create",
        json({ members: ["bob"], name: "", type: 1, creator_username: "mallory" }, bearer())
      )
      expect(create.body).toEqual({ sessionId: "group-1" })
      expect(calls).toEqual([
        { method: "getSessionList", input: "alice" },
        { method: "createSession", input: { creatorUsername: "alice", members: ["bob"], name: "", type: 1 } }
      ])
    }))

  it.scopedLive("GET /api/v1/session/messages reads session_id, limit and before_seq from the query", () =>
    Effect.gen(function*() {
      const { url, calls } = yield* serve()
      const response = yield* call(url + "/api/v1/session/messages?session_id=s1&limit=30&before_seq=90", {
        headers: bearer()
      })
      expect(response.status).toBe(200)
      expect(response.body.messages).toHaveLength(2)
      expect(calls[0]!.input).toEqual({ username: "alice", sessionId: "s1", limit: 30n, beforeSeq: 90n })
      const missing = yield* call(url + "/api/v1/session/messages?limit=30", { headers: bearer() })
      expect(missing.status).toBe(400)
      expect(missing.body.message).toBe("session_id must not be empty")
      const badLimit = yield* call(url + "/api/v1/session/messages?session_id=s1&limit=ten", { headers: bearer() })
      expect(badLimit.status).toBe(400)
      expect(badLimit.body.code).toBe("invalid_argument")
    }))

  it.scopedLive("GET /api/v1/session/search?query= and the extras (contacts, inbox, read, logout)", () =>
    Effect.gen(function*() {
      const { url, calls } = yield* serve()
      const search = yield* call(url + "/api/v1/session/search?query=ca%20r", { headers: bearer() })
      expect(search.body).toEqual({ users: [{ username: "carol" }] })
      const contacts = yield* call(url + "/api/v1/session/contacts", { headers: bearer() })
      expect(contacts.body.contacts).toHaveLength(1)
      const inbox = yield* call(url + "/api/v1/session/inbox?cursor_id=3&limit=200", { headers: bearer() })
      expect(inbox.body.nextCursorId).toBe("7")
      const read = yield* call(url + "/api/v1/session/read", json({ session_id: "s1", seq_id: 40 }, bearer()))
      expect(read.status).toBe(200)
      expect(calls.map((c) => c.input)).toEqual([
        "ca r",
        "alice",
        { username: "alice", cursorId: 3n, limit: 200n },
        { username: "alice", sessionId: "s1", seqId: 40n }
      ])
      const logout = yield* call(url + "/api/v1/auth/logout", { method: "POST", headers: bearer() })
      expect(logout.body).toEqual({ success: true })
      const after = yield* call(url + "/api/v1/session/list", { headers: bearer() })
      expect(after.status).toBe(401)
    }))
})

describe("health probes", () => {
  // A gateway's listeners are up before its last Layer: until then /readyz says it is starting.
  it.effect("/readyz is 503 {status: starting} until the gateway is ready", () =>
    Effect.gen(function*() {
      const readyz = healthRoutes(yield* Readiness).find((route) => route.path === "/readyz")!
      // The probe reads nothing of the request.
      const starting = yield* (readyz.handler as Effect.Effect<HttpServerResponse.HttpServerResponse>)
      expect(starting.status).toBe(503)
      expect(starting.body._tag === "Uint8Array" && JSON.parse(new TextDecoder().decode(starting.body.body))).toEqual({ status: "starting" })
    }).pipe(Effect.provide(Readiness.layer)))

  it.scopedLive("/healthz is always 200 {status: ok}; /readyz follows Readiness: ready once the gateway is built, 503 from the drain on", () =>
    Effect.gen(function*() {
      const { url, readiness } = yield* serve()
      const health = yield* call(url + "/healthz")
      expect(health.status).toBe(200)
      expect(health.body).toEqual({ status: "ok" })
      const ready = yield* call(url + "/readyz")
      expect(ready.status).toBe(200)
      yield* readiness.markDraining
      const draining = yield* call(url + "/readyz")
      expect(draining.status).toBe(503)
      expect(draining.body).toEqual({ status: "draining" })
      expect((yield* call(url + "/healthz")).status).toBe(200)
    }))
})

describe("CORS", () => {
  it.scopedLive("a preflight is 204 with the headers the web client needs, the Origin echoed", () =>
    Effect.gen(function*() {
      const { url, calls } = yield* serve()
      const response = yield* call(url + "/resonance.gateway.v1.SessionService/GetSessionList", {
        method: "OPTIONS",
        headers: {
          origin: "https://chat.example",
          "access-control-request-method": "POST",
          "access-control-request-headers": "content-type, connect-protocol-version, authorization"
        }
      })
      expect(response.status).toBe(204)
      expect(response.headers.get("access-control-allow-origin")).toBe("https://chat.example")
      expect(response.headers.get("access-control-allow-methods")).toContain("POST")
      const allowed = response.headers.get("access-control-allow-headers")!.split(/,\s*/)
      for (
        const header of [
          "content-type",
          "connect-protocol-version",
          "connect-timeout-ms",
          "authorization",
          "x-grpc-web",
          "x-user-agent"
        ]
      ) expect(allowed).toContain(header)
      expect(Number(response.headers.get("access-control-max-age"))).toBeGreaterThan(0)
      expect(calls).toEqual([])
    }))

  it.scopedLive("error responses carry CORS headers too", () =>
    Effect.gen(function*() {
      const { url } = yield* serve()
      const unauthenticated = yield* call(
        url + "/resonance.gateway.v1.SessionService/GetSessionList",
        json({}, { origin: "https://chat.example" })
      )
      expect(unauthenticated.status).toBe(401)
      expect(unauthenticated.headers.get("access-control-allow-origin")).toBe("https://chat.example")
      expect(unauthenticated.headers.get("access-control-expose-headers")).toContain("retry-after")
      // The answer depends on the Origin: a shared cache must not hand it to another origin.
      expect(unauthenticated.headers.get("vary")).toBe("Origin")
      const missing = yield* call(url + "/nowhere", { headers: { origin: "https://chat.example" } })
      expect(missing.status).toBe(404)
      expect(missing.headers.get("access-control-allow-origin")).toBe("https://chat.example")
    }))

  it.scopedLive("with a list of origins, only those are allowed", () =>
    Effect.gen(function*() {
      const { url } = yield* serve({ security: { cors_origins: ["https://chat.example"] } })
      const good = yield* call(url + "/healthz", { headers: { origin: "https://chat.example" } })
      expect(good.headers.get("access-control-allow-origin")).toBe("https://chat.example")
      const bad = yield* call(url + "/healthz", {
        method: "OPTIONS",
        headers: { origin: "https://evil.example", "access-control-request-method": "POST" }
      })
      expect(bad.headers.get("access-control-allow-origin")).toBeNull()
      expect(bad.headers.get("vary")).toBe("Origin")
      const noOrigin = yield* call(url + "/healthz")
      expect(noOrigin.headers.get("access-control-allow-origin")).toBeNull()
    }))
})
