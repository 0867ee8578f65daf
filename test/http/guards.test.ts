import { describe, expect, it } from "@effect/vitest"
import { Deferred, Effect, Fiber, TestClock } from "effect"
import type { LogicShape } from "../../src/application/ports/Logic.js"
import { logicError } from "../../src/domain/Errors.js"
import { bearer, call, connect, json, serve } from "./harness.js"

const login = (url: string, headers: Record<string, string> = {}) =>
  call(url + connect("AuthService", "Login"), json({ username: "alice", password: "secret1" }, headers))

describe("rate limits", () => {
  it.scopedLive("Login per client IP: 429 with Retry-After past the burst, on the REST twin too", () =>
    Effect.gen(function*() {
      const { url, calls } = yield* serve({ limits: { auth_per_ip_per_minute: 3 } })
      for (let i = 0; i < 3; i++) expect((yield* login(url)).status).toBe(200)
      const limited = yield* login(url, { origin: "https://chat.example" })
      expect(limited.status).toBe(429)
      expect(limited.body.code).toBe("resource_exhausted")
      expect(Number(limited.headers.get("retry-after"))).toBeGreaterThanOrEqual(1)
      expect(limited.headers.get("access-control-allow-origin")).toBe("https://chat.example")
      const twin = yield* call(url + "/api/v1/auth/login", json({ username: "alice", password: "secret1" }))
      expect(twin.status).toBe(429)
      // Register has a bucket of its own.
      const register = yield* call(
        url + connect("AuthService", "Register"),
        json({ username: "zed", password: "secret1" })
      )
      expect(register.status).toBe(200)
      expect(calls.map((c) => c.method)).toEqual(["login", "login", "login", "register"])
    }))

  it.scopedLive("SessionService per user: one user's flood does not limit another", () =>
    Effect.gen(function*() {
      // Below one call a second the burst is one call.
      const { url } = yield* serve({ limits: { session_per_user_per_second: 0.01 } })
      const list = (token: string) => call(url + connect("SessionService", "GetSessionList"), json({}, bearer(token)))
      expect((yield* list("token-alice")).status).toBe(200)
      const limited = yield* list("token-alice")
      expect(limited.status).toBe(429)
      expect(Number(limited.headers.get("retry-after"))).toBeGreaterThan(1)
      // All methods share the user's bucket.
      const other = yield* call(url + "/api/v1/session/contacts", { headers: bearer() })
      expect(other.status).toBe(429)
      expect((yield* list("token-bob")).status).toBe(200)
    }))

  // The limiter reads time through Effect's Clock: the test clock moves it, nothing sleeps.
  it.scoped("failed logins are counted per username and address: the guessing address is refused, the owner elsewhere gets in", () =>
    Effect.gen(function*() {
      const { url, calls } = yield* serve({
        security: { trusted_proxies: ["127.0.0.1"] },
        limits: { failed_logins_per_user_per_ip: 3, failed_login_window: "1.5s" }
      })
      const attempt = (username: string, password: string, from: string) =>
        call(url + connect("AuthService", "Login"), json({ username, password }, { "x-forwarded-for": from }))
      for (let i = 0; i < 3; i++) expect((yield* attempt("alice", "wrong", "198.51.100.1")).status).toBe(401)
      const blocked = yield* attempt(" Alice ", "secret1", "198.51.100.1")
      expect(blocked.status).toBe(429)
      expect(blocked.body.message).toContain("too many failed logins for this user from this address")
      expect(Number(blocked.headers.get("retry-after"))).toBeGreaterThanOrEqual(1)
      expect(calls.filter((c) => c.method === "login")).toHaveLength(3)
      // The owner, from an address that has not failed, is not locked out.
      expect((yield* attempt("alice", "secret1", "203.0.113.9")).status).toBe(200)
      // The guessing address may still log in as someone else; a success forgets earlier failures.
      expect((yield* attempt("bob", "wrong", "198.51.100.1")).status).toBe(401)
      expect((yield* attempt("bob", "secret1", "198.51.100.1")).status).toBe(200)
      for (let i = 0; i < 2; i++) expect((yield* attempt("bob", "wrong", "198.51.100.1")).status).toBe(401)
      expect((yield* attempt("bob", "secret1", "198.51.100.1")).status).toBe(200)
      // The pair's budget refills over the window.
      expect((yield* attempt("alice", "secret1", "198.51.100.1")).status).toBe(429)
      yield* TestClock.adjust("600 millis")
      expect((yield* attempt("alice", "secret1", "198.51.100.1")).status).toBe(200)
    }))

  it.scopedLive("a brute force from several addresses: each address gets a few hashes at once, attempts on one user run one at a time, the owner gets in", () =>
    Effect.gen(function*() {
      let running = 0
      let most = 0
      const slowLogin: Partial<LogicShape>["login"] = (input) =>
        Effect.gen(function*() {
          running++
          most = Math.max(most, running)
          yield* Effect.sleep("40 millis")
          running--
          if (input.password !== "secret1") return yield* Effect.fail(logicError("unauthenticated", "invalid username or password"))
          return { accessToken: "token-alice", user: { username: input.username, nickname: "", avatarUrl: "" } }
        })
      const { url } = yield* serve({
        security: { trusted_proxies: ["127.0.0.1"] },
        limits: { failed_logins_per_user_per_ip: 1_000, failed_login_window: "15m", logins_in_flight_per_ip: 2 }
      }, { login: slowLogin })
      const attempt = (password: string, from: string) =>
        call(url + connect("AuthService", "Login"), json({ username: "alice", password }, { "x-forwarded-for": from }))
      const attackers = ["198.51.100.1", "198.51.100.2", "198.51.100.3"].flatMap((from) => Array.from({ length: 4 }, () => attempt("wrong", from)))
      const [attacks, owner] = yield* Effect.all([
        Effect.all(attackers, { concurrency: "unbounded" }),
        Effect.zipRight(Effect.sleep("10 millis"), attempt("secret1", "203.0.113.9"))
      ], { concurrency: "unbounded" })
      expect(owner.status).toBe(200)
      const statuses = attacks.map((answer) => answer.status)
      // Two of each address's four were refused at once: the hash queue stays fair.
      expect(statuses.filter((status) => status === 429)).toHaveLength(6)
      expect(statuses.filter((status) => status === 401)).toHaveLength(6)
      expect(most).toBe(1)
    }))

  it.scopedLive("the front step's plain 429 (no place left for a hash) carries the CORS headers a browser needs to read it", () =>
    Effect.gen(function*() {
      const entered = yield* Deferred.make<void>()
      const release = yield* Deferred.make<void>()
      const { url } = yield* serve(
        { limits: { logins_in_flight_per_ip: 1 } },
        {
          login: (input) =>
            Deferred.succeed(entered, undefined).pipe(
              Effect.zipRight(Deferred.await(release)),
              Effect.as({ accessToken: "token-alice", user: { username: input.username, nickname: "", avatarUrl: "" } })
            )
        }
      )
      const origin = "https://chat.example"
      // The first login holds the address's only place until Logic answers it.
      const held = yield* Effect.fork(login(url, { origin }))
      yield* Deferred.await(entered)
      const refused = yield* login(url, { origin })
      expect(refused.status).toBe(429)
      expect(refused.body).toEqual({ code: "resource_exhausted", message: "too many logins at once from this address, retry in 1s" })
      expect(refused.headers.get("access-control-allow-origin")).toBe(origin)
      expect(refused.headers.get("access-control-expose-headers")).toContain("retry-after")
      expect(refused.headers.get("retry-after")).toBe("1")
      expect(refused.headers.get("x-content-type-options")).toBe("nosniff")
      yield* Deferred.succeed(release, undefined)
      expect((yield* Fiber.join(held)).status).toBe(200)
    }))

  it.scopedLive("an IPv6 client is limited per /64: a new interface id buys no new budget", () =>
    Effect.gen(function*() {
      const { url } = yield* serve({
        security: { trusted_proxies: ["127.0.0.1"] },
        limits: { auth_per_ip_per_minute: 2 }
      })
      const from = (ip: string) => login(url, { "x-forwarded-for": ip })
      expect((yield* from("2001:db8:1:2::1")).status).toBe(200)
      expect((yield* from("2001:db8:1:2:aaaa:bbbb:cccc:dddd")).status).toBe(200)
      expect((yield* from("2001:db8:1:2::ffff")).status).toBe(429)
      expect((yield* from("2001:db8:1:3::1")).status).toBe(200)
    }))

  it.scopedLive("a refused address that forwards X-Forwarded-For or is private is named in one warning about trusted_proxies", () =>
    Effect.gen(function*() {
      const { url, logs } = yield* serve({ limits: { auth_per_ip_per_minute: 1 } })
      const warnings = () => logs.filter((log) => log.message.includes("security.trusted_proxies"))
      expect((yield* login(url, { "x-forwarded-for": "198.51.100.1" })).status).toBe(200)
      expect(warnings()).toHaveLength(0)
      for (let i = 0; i < 3; i++) expect((yield* login(url, { "x-forwarded-for": "198.51.100.2" })).status).toBe(429)
      expect(warnings()).toHaveLength(1)
      expect(warnings()[0]!.message).toContain("127.0.0.1 sends X-Forwarded-For")
      expect(warnings()[0]!.annotations["client_ip"]).toBe("127.0.0.1")
    }))

  it.scopedLive("behind a trusted proxy a refused public client gets no proxy warning", () =>
    Effect.gen(function*() {
      const { url, logs } = yield* serve({
        limits: { auth_per_ip_per_minute: 1 },
        security: { trusted_proxies: ["127.0.0.1"] }
      })
      expect((yield* login(url, { "x-forwarded-for": "198.51.100.1" })).status).toBe(200)
      expect((yield* login(url, { "x-forwarded-for": "198.51.100.1" })).status).toBe(429)
      expect(logs.filter((log) => log.message.includes("trusted_proxies"))).toHaveLength(0)
      // Without XFF the peer itself is the client: loopback is private, so the hint fires.
      expect((yield* login(url)).status).toBe(200)
      expect((yield* login(url)).status).toBe(429)
      expect(logs.filter((log) => log.message.includes("is a private address"))).toHaveLength(1)
    }))

  it.scopedLive("with limits at 0 nothing is limited", () =>
    Effect.gen(function*() {
      const { url } = yield* serve()
      for (let i = 0; i < 30; i++) expect((yield* login(url)).status).toBe(200)
    }))
})

describe("IP filtering", () => {
  it.scopedLive("a denied address gets 403 permission_denied on every route, with CORS headers", () =>
    Effect.gen(function*() {
      const { url, calls } = yield* serve({ security: { ip_deny: ["127.0.0.1/32"] } })
      for (const path of ["/healthz", "/readyz", "/api/v1/session/list", "/nowhere"]) {
        const response = yield* call(url + path, { headers: { origin: "https://chat.example" } })
        expect([path, response.status, response.body.code]).toEqual([path, 403, "permission_denied"])
        expect(response.headers.get("access-control-allow-origin")).toBe("https://chat.example")
      }
      expect((yield* login(url)).status).toBe(403)
      expect(calls).toEqual([])
    }))

  it.scopedLive("an allow list without loopback refuses us; one with it lets us in", () =>
    Effect.gen(function*() {
      const refused = yield* serve({ security: { ip_allow: ["10.0.0.0/8", "2001:db8::/32"] } })
      expect((yield* call(refused.url + "/healthz")).status).toBe(403)
      const admitted = yield* serve({ security: { ip_allow: ["10.0.0.0/8", "127.0.0.0/8"] } })
      expect((yield* call(admitted.url + "/healthz")).status).toBe(200)
    }))

  it.scopedLive("X-Forwarded-For is honoured only from a trusted proxy, right-most untrusted hop first", () =>
    Effect.gen(function*() {
      const behindProxy = yield* serve({ security: { trusted_proxies: ["127.0.0.1/32", "10.0.0.0/8"], ip_deny: ["203.0.113.7"] } })
      const xff = (value: string) => call(behindProxy.url + "/healthz", { headers: { "x-forwarded-for": value } })
      expect((yield* xff("203.0.113.7")).status).toBe(403)
      expect((yield* xff("203.0.113.7, 10.1.1.1")).status).toBe(403)
      expect((yield* xff("198.51.100.1")).status).toBe(200)
      // A client cannot hide behind a forged left-most hop.
      expect((yield* xff("198.51.100.1, 203.0.113.7")).status).toBe(403)
      expect((yield* xff("203.0.113.7, 198.51.100.1")).status).toBe(200)

      const direct = yield* serve({ security: { ip_deny: ["203.0.113.7"] } })
      const spoofed = yield* call(direct.url + "/healthz", { headers: { "x-forwarded-for": "203.0.113.7" } })
      expect(spoofed.status).toBe(200)
    }))

  it.scopedLive("behind a trusted proxy the Login limit is kept per forwarded client", () =>
    Effect.gen(function*() {
      const { url } = yield* serve({
        security: { trusted_proxies: ["127.0.0.1"] },
        limits: { auth_per_ip_per_minute: 1 }
      })
      expect((yield* login(url, { "x-forwarded-for": "198.51.100.1" })).status).toBe(200)
      expect((yield* login(url, { "x-forwarded-for": "198.51.100.1" })).status).toBe(429)
      expect((yield* login(url, { "x-forwarded-for": "198.51.100.2" })).status).toBe(200)
    }))
})

describe("observability", () => {
  it.scopedLive("every request is counted under its route pattern, never the raw URL", () =>
    Effect.gen(function*() {
      const { url, metrics } = yield* serve()
      yield* login(url)
      yield* call(url + "/api/v1/session/messages?session_id=secret-session&limit=5", { headers: bearer() })
      yield* call(url + "/users/12345/profile")
      yield* call(url + "/healthz", { method: "OPTIONS" })
      expect(metrics).toEqual([
        { route: "/resonance.gateway.v1.AuthService/Login", code: 200 },
        { route: "/api/v1/session/messages", code: 200 },
        { route: "unmatched", code: 404 },
        { route: "/healthz", code: 204 }
      ])
    }))

  it.scopedLive("one span per request is named after the route; log lines carry the username", () =>
    Effect.gen(function*() {
      const { url, spans, logs } = yield* serve()
      yield* call(url + "/api/v1/session/list", { headers: bearer("token-bob") })
      yield* call(url + "/nowhere")
      expect(spans).toContain("HTTP /api/v1/session/list")
      expect(spans).toContain("HTTP unmatched")
      const listed = logs.find((log) => log.annotations["route"] === "/api/v1/session/list")
      expect(listed?.annotations).toMatchObject({ username: "bob", status: 200, client_ip: "127.0.0.1" })
      const unmatched = logs.find((log) => log.annotations["route"] === "unmatched")
      expect(unmatched?.annotations["username"]).toBeUndefined()
    }))
})
