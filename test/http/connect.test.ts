import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import * as Http from "node:http"
import type { FailureCode } from "../../src/domain/Errors.js"
import { logicError } from "../../src/domain/Errors.js"
import * as Api from "../../src/gen/gateway/v1/api.js"
import { bearer, call, callBinary, connect, json, serve } from "./harness.js"

/** The API's body limit (`HttpApi.layerConfig`): a request body past it is refused. */
const MAX_BODY_BYTES = 1024 * 1024

const expiredJwt = () => {
  const encode = (value: unknown) => Buffer.from(JSON.stringify(value)).toString("base64url")
  return `${encode({ alg: "HS256", typ: "JWT" })}.${encode({ sub: "alice", exp: 1_000 })}.c2ln`
}

describe("Connect unary, JSON", () => {
  it.scopedLive("Login answers the shape the web client reads", () =>
    Effect.gen(function*() {
      const { url, calls } = yield* serve()
      const response = yield* call(
        url + connect("AuthService", "Login"),
        json({ username: "alice", password: "secret1" }, { "connect-protocol-version": "1" })
      )
      expect(response.status).toBe(200)
      expect(response.headers.get("content-type")).toMatch(/^application\/json/)
      expect(response.body).toEqual({ accessToken: "token-alice", user: { username: "alice", nickname: "Alice" } })
      expect(calls).toEqual([{ method: "login", input: { username: "alice", password: "secret1" } }])
    }))

  it.scopedLive("Register accepts snake_case keys as well as lowerCamelCase", () =>
    Effect.gen(function*() {
      const { url, calls } = yield* serve()
      const response = yield* call(
        url + connect("AuthService", "Register"),
        json({ username: "dave", password: "secret1", nickname: "Dave" })
      )
      expect(response.status).toBe(200)
      expect(response.body.user).toEqual({ username: "dave", nickname: "Dave" })
      const history = yield* call(
        url + connect("SessionService", "GetHistoryMessages"),
        json({ session_id: "s9", before_seq: "17" }, bearer())
      )
      expect(history.status).toBe(200)
      expect(calls[0]).toEqual({ method: "register", input: { username: "dave", password: "secret1", nickname: "Dave" } })
      expect(calls[1]!.input).toEqual({ username: "alice", sessionId: "s9", limit: 0n, beforeSeq: 17n })
    }))

  it.scopedLive("GetSessionList with {} renders int64 fields as strings", () =>
    Effect.gen(function*() {
      const { url, calls } = yield* serve()
      const response = yield* call(url + connect("SessionService", "GetSessionList"), json({}, bearer()))
      expect(response.status).toBe(200)
      const [session] = response.body.sessions
      expect(session.unreadCount).toBe("3")
      expect(session.lastReadSeq).toBe("39")
      expect(session.lastMessage.msgId).toBe("123456789012345678")
      expect(session.lastMessage.timestamp).toBe("1700000000")
      expect(calls).toEqual([{ method: "getSessionList", input: "alice" }])
    }))

  it.scopedLive("PullInboxDelta takes {\"limit\":\"200\"} (int64 as a string)", () =>
    Effect.gen(function*() {
      const { url, calls } = yield* serve()
      const response = yield* call(url + connect("SessionService", "PullInboxDelta"), json({ limit: "200" }, bearer()))
      expect(response.status).toBe(200)
      expect(response.body).toEqual({
        events: [{ inboxId: "7", message: expect.objectContaining({ msgId: "123456789012345678", seqId: "42" }) }],
        nextCursorId: "7",
        hasMore: true
      })
      expect(calls).toEqual([{ method: "pullInboxDelta", input: { username: "alice", cursorId: 0n, limit: 200n } }])
    }))

  it.scopedLive("int64 fields are accepted as JSON numbers too", () =>
    Effect.gen(function*() {
      const { url, calls } = yield* serve()
      const response = yield* call(
        url + connect("SessionService", "GetHistoryMessages"),
        json({ sessionId: "s1", limit: 20, beforeSeq: 100 }, bearer())
      )
      expect(response.status).toBe(200)
      expect(response.body.messages.map((m: { seqId: string }) => m.seqId)).toEqual(["42", "43"])
      expect(calls[0]!.input).toEqual({ username: "alice", sessionId: "s1", limit: 20n, beforeSeq: 100n })
    }))

  it.scopedLive("the caller's username comes from the token, never from the body", () =>
    Effect.gen(function*() {
      const { url, calls } = yield* serve()
      const created = yield* call(
        url + connect("SessionService", "CreateSession"),
        json({ creatorUsername: "mallory", creator_username: "mallory", members: ["bob"], name: "G", type: 2 }, bearer())
      )
      expect(created.status).toBe(200)
      expect(created.body).toEqual({ sessionId: "group-1" })
      // No type: one other member makes a direct session, several a group (which needs a name).
      yield* call(url + connect("SessionService", "CreateSession"), json({ members: ["bob"] }, bearer()))
      const nameless = yield* call(url + connect("SessionService", "CreateSession"), json({ members: ["bob", "carol"] }, bearer()))
      expect(nameless.status).toBe(400)
      expect(nameless.body.message).toBe("a group session needs a name")
      yield* call(url + connect("SessionService", "CreateSession"), json({ members: ["bob", "carol"], name: "Trio" }, bearer()))
      yield* call(
        url + connect("SessionService", "UpdateReadPosition"),
        json({ username: "mallory", sessionId: "s1", seqId: "5" }, bearer("token-bob"))
      )
      expect(calls).toEqual([
        { method: "createSession", input: { creatorUsername: "alice", members: ["bob"], name: "G", type: 2 } },
        { method: "createSession", input: { creatorUsername: "alice", members: ["bob"], name: "", type: 1 } },
        { method: "createSession", input: { creatorUsername: "alice", members: ["bob", "carol"], name: "Trio", type: 2 } },
        { method: "updateReadPosition", input: { username: "bob", sessionId: "s1", seqId: 5n } }
      ])
    }))

  it.scopedLive("every API answer, errors included, is marked nosniff and no-store", () =>
    Effect.gen(function*() {
      const { url } = yield* serve()
      const answers = [
        yield* call(url + connect("AuthService", "Login"), json({ username: "alice", password: "secret1" })),
        yield* call(url + connect("SessionService", "GetSessionList"), json({})),
        yield* call(url + "/api/v1/session/list", { headers: bearer() }),
        yield* call(url + "/no-such-route")
      ]
      expect(answers.map((a) => a.status)).toEqual([200, 401, 200, 404])
      for (const answer of answers) {
        expect(answer.headers.get("x-content-type-options")).toBe("nosniff")
        expect(answer.headers.get("cache-control")).toBe("no-store")
      }
    }))

  it.scopedLive("a group above limits.max_group_members is refused before Logic is asked", () =>
    Effect.gen(function*() {
      const { url, calls } = yield* serve({ limits: { max_group_members: 3 } })
      const create = (members: Array<string>) =>
        call(url + connect("SessionService", "CreateSession"), json({ members, name: "Big", type: 2 }, bearer()))
      expect((yield* create(["bob", "carol"])).status).toBe(200)
      const tooBig = yield* create(["bob", "carol", "dave"])
      expect(tooBig.status).toBe(400)
      expect(tooBig.body.message).toBe("a group may have at most 3 members")
      expect(calls.filter((c) => c.method === "createSession")).toHaveLength(1)
    }))

  it.scopedLive("int64 fields are checked before they are parsed: a megabyte of digits is a 400 at once", () =>
    Effect.gen(function*() {
      const { url, calls } = yield* serve()
      const history = (body: Record<string, unknown>) =>
        call(url + connect("SessionService", "GetHistoryMessages"), json({ sessionId: "s1", ...body }, bearer()))
      for (const body of [{ limit: "9".repeat(1_000_000) }, { limit: 1.5 }, { limit: "1e3" }, { before_seq: "12a" }, { limit: [1] }]) {
        const refused = yield* history(body)
        expect(refused.status, JSON.stringify(body).slice(0, 40)).toBe(400)
        expect(refused.body.code).toBe("invalid_argument")
      }
      expect((yield* history({ limit: "-1" })).body.message).toBe("limit must be between 0 and 9223372036854775807")
      expect((yield* history({ limit: "20", before_seq: 7 })).status).toBe(200)
      expect((yield* call(url + "/api/v1/session/messages?session_id=s1&limit=" + "9".repeat(5_000), { headers: bearer() })).status).toBe(400)
      expect(calls.filter((c) => c.method === "getHistoryMessages")).toHaveLength(1)
    }))

  it.scopedLive("GetContactList and SearchUser", () =>
    Effect.gen(function*() {
      const { url, calls } = yield* serve()
      const contacts = yield* call(url + connect("SessionService", "GetContactList"), json({}, bearer()))
      expect(contacts.body).toEqual({ contacts: [{ username: "bob", nickname: "Bob" }] })
      const search = yield* call(url + connect("SessionService", "SearchUser"), json({ query: "car" }, bearer()))
      expect(search.body).toEqual({ users: [{ username: "carol" }] })
      expect(calls.map((c) => c.input)).toEqual(["alice", "car"])
    }))
})

describe("Connect unary, binary", () => {
  it.scopedLive("Login in application/proto answers in application/proto", () =>
    Effect.gen(function*() {
      const { url, calls } = yield* serve()
      const response = yield* callBinary(url + connect("AuthService", "Login"), {
        method: "POST",
        headers: { "content-type": "application/proto" },
        body: Api.LoginRequest.encode({ username: "alice", password: "secret1" }).finish()
      })
      expect(response.status).toBe(200)
      expect(response.headers.get("content-type")).toBe("application/proto")
      expect(Api.LoginResponse.decode(response.bytes)).toEqual({
        accessToken: "token-alice",
        user: { username: "alice", nickname: "Alice", avatarUrl: "" }
      })
      expect(calls[0]!.input).toEqual({ username: "alice", password: "secret1" })
    }))

  it.scopedLive("PullInboxDelta in binary carries int64 values exactly", () =>
    Effect.gen(function*() {
      const { url, calls } = yield* serve()
      const response = yield* callBinary(url + connect("SessionService", "PullInboxDelta"), {
        method: "POST",
        headers: { "content-type": "application/proto", ...bearer() },
        body: Api.PullInboxDeltaRequest.encode({ accessToken: "", cursorId: 9007199254740993n, limit: 50n }).finish()
      })
      expect(response.status).toBe(200)
      const decoded = Api.PullInboxDeltaResponse.decode(response.bytes)
      expect(decoded.nextCursorId).toBe(7n)
      expect(decoded.events[0]!.message!.msgId).toBe(123456789012345678n)
      expect(calls[0]!.input).toEqual({ username: "alice", cursorId: 9007199254740993n, limit: 50n })
    }))

  it.scopedLive("a body that is not protobuf is invalid_argument, and Logic is not called", () =>
    Effect.gen(function*() {
      const { url, calls } = yield* serve()
      const response = yield* call(url + connect("AuthService", "Login"), {
        method: "POST",
        headers: { "content-type": "application/proto" },
        // Field 1, length-delimited, claims 5 bytes but carries 1.
        body: new Uint8Array([0x0a, 0x05, 0x61])
      })
      expect(response.status).toBe(400)
      expect(response.headers.get("content-type")).toMatch(/^application\/json/)
      expect(response.body.code).toBe("invalid_argument")
      expect(response.body.message).toMatch(/^invalid protobuf body/)
      expect(calls).toEqual([])
    }))
})

describe("Connect errors", () => {
  const codes: ReadonlyArray<readonly [FailureCode, number]> = [
    ["invalid_argument", 400],
    ["unauthenticated", 401],
    ["permission_denied", 403],
    ["not_found", 404],
    ["already_exists", 409],
    ["resource_exhausted", 429],
    ["internal", 500],
    ["unavailable", 503],
    ["deadline_exceeded", 504]
  ]

  it.scopedLive("every LogicError code maps onto its HTTP status with a {code, message} body", () =>
    Effect.gen(function*() {
      const { url } = yield* serve({}, {
        login: (input) => Effect.fail(logicError(input.password as FailureCode, `failed: ${input.password}`))
      })
      for (const [code, status] of codes) {
        const response = yield* call(url + connect("AuthService", "Login"), json({ username: "a", password: code }))
        expect([code, response.status]).toEqual([code, status])
        expect(response.body).toEqual({ code, message: `failed: ${code}` })
        expect(response.headers.get("content-type")).toMatch(/^application\/json/)
      }
    }))

  it.scopedLive("malformed JSON is invalid_argument \"invalid JSON body\"", () =>
    Effect.gen(function*() {
      const { url, calls } = yield* serve()
      const response = yield* call(url + connect("AuthService", "Login"), {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: "{\"username\": "
      })
      expect(response.status).toBe(400)
      expect(response.body).toEqual({ code: "invalid_argument", message: "invalid JSON body" })
      expect(calls).toEqual([])
    }))

  it.scopedLive("JSON that is not an object, or a bad int64, is invalid_argument", () =>
    Effect.gen(function*() {
      const { url } = yield* serve()
      const array = yield* call(url + connect("AuthService", "Login"), json([1, 2]))
      expect(array.status).toBe(400)
      expect(array.body.message).toBe("invalid JSON body: expected an object")
      const nested = yield* call(url + connect("AuthService", "Login"), json({ username: { x: 1 }, password: "p" }))
      expect(nested.status).toBe(400)
      expect(nested.body.message).toContain("\"username\"")
      for (const limit of ["abc", 1.5]) {
        const badInt = yield* call(url + connect("SessionService", "PullInboxDelta"), json({ limit }, bearer()))
        expect(badInt.status).toBe(400)
        expect(badInt.body.code).toBe("invalid_argument")
      }
    }))

  it.scopedLive("an unsupported content type is 415 with a Connect error", () =>
    Effect.gen(function*() {
      const { url, calls } = yield* serve()
      const response = yield* call(url + connect("AuthService", "Login"), {
        method: "POST",
        headers: { "content-type": "text/plain" },
        body: "{}"
      })
      expect(response.status).toBe(415)
      expect(response.body.code).toBe("unimplemented")
      expect(response.body.message).toContain("text/plain")
      expect(calls).toEqual([])
    }))

  it.scopedLive("a body over maxBodyBytes is resource_exhausted (413)", () =>
    Effect.gen(function*() {
      const { url, calls } = yield* serve()
      const response = yield* call(
        url + connect("AuthService", "Login"),
        json({ username: "alice", password: "x".repeat(MAX_BODY_BYTES + 1) })
      )
      expect(response.status).toBe(413)
      expect(response.body.code).toBe("resource_exhausted")
      expect(calls).toEqual([])
      // The connection stays usable for the next request.
      const next = yield* call(url + connect("AuthService", "Login"), json({ username: "alice", password: "secret" }))
      expect(next.status).toBe(200)
    }))

  it.scopedLive("a chunked body is read up to maxBodyBytes; one that grows past it costs the connection, not a Logic call", () =>
    Effect.gen(function*() {
      const { url, calls, metrics } = yield* serve()
      /** A Login whose password arrives in `chunks` chunks of a sixteenth of the limit, without a Content-Length. */
      const chunked = (chunks: number) =>
        Effect.promise(() =>
          new Promise<{ status?: number; error?: string }>((resolve) => {
            const request = Http.request(url + connect("AuthService", "Login"), {
              method: "POST",
              headers: { "content-type": "application/json", "transfer-encoding": "chunked" }
            }, (response) => {
              response.resume()
              response.on("end", () => resolve({ status: response.statusCode }))
            })
            request.on("error", (error) => resolve({ error: error.message }))
            request.write("{\"username\":\"alice\",\"password\":\"")
            let sent = 0
            const next = () => {
              if (sent++ === chunks) return request.end("\"}")
              request.write("x".repeat(MAX_BODY_BYTES / 16))
              setTimeout(next, 2)
            }
            next()
          })
        )
      expect(yield* chunked(9)).toEqual({ status: 200 })
      expect(calls).toHaveLength(1)
      const tooLong = yield* chunked(30)
      expect(tooLong.status).toBeUndefined()
      expect(tooLong.error).toBeDefined()
      expect(calls).toHaveLength(1)
      expect(metrics.at(-1)).toEqual({ route: connect("AuthService", "Login"), code: 413 })
    }))

  it.scopedLive("Connect-Timeout-Ms bounds the Logic call: deadline_exceeded (504)", () =>
    Effect.gen(function*() {
      const { url } = yield* serve({}, { login: () => Effect.never })
      const response = yield* call(
        url + connect("AuthService", "Login"),
        json({ username: "alice", password: "secret" }, { "connect-timeout-ms": "50" })
      )
      expect(response.status).toBe(504)
      expect(response.body.code).toBe("deadline_exceeded")
    }))

  it.scopedLive("an unknown path is 404 not_found; a wrong method on a known path is 405", () =>
    Effect.gen(function*() {
      const { url } = yield* serve()
      const missing = yield* call(url + "/resonance.gateway.v1.AuthService/Nope", json({}))
      expect(missing.status).toBe(404)
      expect(missing.body.code).toBe("not_found")
      const wrongMethod = yield* call(url + connect("AuthService", "Login"))
      expect(wrongMethod.status).toBe(405)
      expect(wrongMethod.headers.get("allow")).toBe("POST, OPTIONS")
    }))

  it.scopedLive("a Logic defect becomes internal (500) without leaking details", () =>
    Effect.gen(function*() {
      const { url, logs } = yield* serve({}, { login: () => Effect.die(new Error("secret stack")) })
      const response = yield* call(url + connect("AuthService", "Login"), json({ username: "a", password: "secret" }))
      expect(response.status).toBe(500)
      expect(response.body).toEqual({ code: "internal", message: "internal error" })
      expect(logs.some((log) => log.message.includes("failed"))).toBe(true)
    }))
})

describe("validation", () => {
  const cases: ReadonlyArray<readonly [string, string, unknown, string]> = [
    ["AuthService", "Login", { username: "", password: "secret1" }, "username must not be empty"],
    ["AuthService", "Login", { username: "   ", password: "secret1" }, "username must not be empty"],
    ["AuthService", "Login", { username: "alice" }, "password must not be empty"],
    ["AuthService", "Register", { username: "alice", password: "12345" }, "password must be at least 6 characters"],
    ["SessionService", "CreateSession", { type: 2, name: "G" }, "members must not be empty for a group session"],
    ["SessionService", "CreateSession", { type: 2, members: ["bob", " "] }, "members must not contain an empty username"],
    ["SessionService", "CreateSession", { type: 7, members: ["bob"] }, "type must be 1 (direct), 2 (group) or 3 (system)"],
    ["SessionService", "CreateSession", { members: [] }, "members must name the other user"],
    ["SessionService", "GetHistoryMessages", { limit: "10" }, "session_id must not be empty"],
    ["SessionService", "GetHistoryMessages", { sessionId: "s1", limit: "-1" }, "limit must be between 0 and 9223372036854775807"],
    ["SessionService", "GetHistoryMessages", { sessionId: "s1", limit: "9223372036854775808" }, "limit must be between 0 and 9223372036854775807"],
    ["SessionService", "UpdateReadPosition", { seqId: "3" }, "session_id must not be empty"],
    ["SessionService", "UpdateReadPosition", { sessionId: "s1", seqId: -3 }, "seq_id must be between 0 and 9223372036854775807"],
    ["SessionService", "SearchUser", { query: "" }, "query must not be empty"],
    ["SessionService", "PullInboxDelta", { cursorId: "-5" }, "cursor_id must be between 0 and 9223372036854775807"]
  ]

  it.scopedLive("each broken rule is invalid_argument with its own message, and Logic is never called", () =>
    Effect.gen(function*() {
      const { url, calls } = yield* serve()
      for (const [service, method, body, expected] of cases) {
        const response = yield* call(
          url + connect(service as "AuthService", method),
          json(body, service === "SessionService" ? bearer() : {})
        )
        expect([method, response.status, response.body]).toEqual([
          method,
          400,
          { code: "invalid_argument", message: expected }
        ])
      }
      expect(calls).toEqual([])
    }))
})

describe("authentication", () => {
  it.scopedLive("SessionService without a bearer token is unauthenticated (401); Logic is not called", () =>
    Effect.gen(function*() {
      const { url, calls } = yield* serve()
      const missing = yield* call(url + connect("SessionService", "GetSessionList"), json({}))
      expect(missing.status).toBe(401)
      expect(missing.body).toEqual({ code: "unauthenticated", message: "missing access token" })
      expect(missing.headers.get("www-authenticate")).toBe("Bearer")
      const wrongScheme = yield* call(
        url + connect("SessionService", "GetSessionList"),
        json({}, { authorization: "Basic YWxpY2U6eA==" })
      )
      expect(wrongScheme.status).toBe(401)
      // A token in the body does not authenticate a SessionService call.
      const inBody = yield* call(url + connect("SessionService", "GetSessionList"), json({ accessToken: "token-alice" }))
      expect(inBody.status).toBe(401)
      expect(calls).toEqual([])
    }))

  it.scopedLive("an invalid or expired token is 401; an auth outage is unavailable (503)", () =>
    Effect.gen(function*() {
      const { url } = yield* serve()
      const invalid = yield* call(url + connect("SessionService", "GetSessionList"), json({}, bearer("token-eve")))
      expect(invalid.status).toBe(401)
      expect(invalid.body.code).toBe("unauthenticated")
      const expired = yield* call(url + connect("SessionService", "GetSessionList"), json({}, bearer(expiredJwt())))
      expect(expired.status).toBe(401)
      expect(expired.body).toEqual({ code: "unauthenticated", message: "access token expired" })
      const down = yield* call(url + connect("SessionService", "GetSessionList"), json({}, bearer("token-down")))
      expect(down.status).toBe(503)
      expect(down.body.code).toBe("unavailable")
    }))

  it.scopedLive("Logout revokes the header's token: it is refused afterwards", () =>
    Effect.gen(function*() {
      const { url } = yield* serve()
      const before = yield* call(url + connect("SessionService", "GetSessionList"), json({}, bearer()))
      expect(before.status).toBe(200)
      const logout = yield* call(url + connect("AuthService", "Logout"), json({}, bearer()))
      expect(logout.status).toBe(200)
      expect(logout.body).toEqual({ success: true })
      const after = yield* call(url + connect("SessionService", "GetSessionList"), json({}, bearer()))
      expect(after.status).toBe(401)
      // Bob's token is untouched.
      const bob = yield* call(url + connect("SessionService", "GetSessionList"), json({}, bearer("token-bob")))
      expect(bob.status).toBe(200)
    }))

  it.scopedLive("Logout takes the token from the body's access_token; without any token it is 401", () =>
    Effect.gen(function*() {
      const { url } = yield* serve()
      const logout = yield* call(url + connect("AuthService", "Logout"), json({ access_token: "token-bob" }))
      expect(logout.body).toEqual({ success: true })
      const after = yield* call(url + connect("SessionService", "GetSessionList"), json({}, bearer("token-bob")))
      expect(after.status).toBe(401)
      const anonymous = yield* call(url + connect("AuthService", "Logout"), json({}))
      expect(anonymous.status).toBe(401)
    }))
})
