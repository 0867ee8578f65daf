import * as grpc from "@grpc/grpc-js"
import { describe, expect, it } from "@effect/vitest"
import { Deferred, Effect, Exit, Option, Scope, SubscriptionRef } from "effect"
import type { LogicShape } from "../../src/application/ports/Logic.js"
import { withFrontDoor } from "../support/door.js"
import * as InternalAuth from "../../src/adapters/platform/grpc/Security.js"
import * as LogicGrpc from "../../src/adapters/logic-grpc/LogicGrpc.js"
import { serveLogic } from "../../src/adapters/logic-server/LogicGrpcServer.js"
import { logicError } from "../../src/domain/Errors.js"
import type { FailureCode, LogicError } from "../../src/domain/Errors.js"
import type {
  ContactInfo,
  InboxPage,
  PresenceBatch,
  PushMessage,
  SessionInfo,
  User
} from "../../src/domain/Model.js"
import { AuthServiceService } from "../../src/gen/logic/v1/auth.js"
import { ChatServiceClient } from "../../src/gen/logic/v1/chat.js"
import type { SendMessageResponse } from "../../src/gen/logic/v1/chat.js"
import { buildLogic, chat, eventually, fakeLogic, recordingMetrics, recordingTracer, serveFake, staticClient } from "./support.js"

const int64Max = 9_223_372_036_854_775_807n
const user: User = { username: "alice", nickname: "Alice", avatarUrl: "https://cdn.example/alice.png" }
const message: PushMessage = {
  msgId: int64Max,
  seqId: 2n ** 40n + 1n,
  sessionId: "single:alice:bob",
  fromUsername: "alice",
  toUsername: "bob",
  content: "héllo 👋",
  type: "text",
  timestamp: 1_700_000_000n,
  sessionMeta: { name: "Alice & Bob", type: 1 }
}
const failureOf = <A>(effect: Effect.Effect<A, LogicError>) =>
  Effect.flip(effect).pipe(Effect.map((error) => ({ code: error.code, message: error.message })))

/** A Logic whose every call is counted, answering getContactList with its name. */
const countingLogic = (name: string) => {
  const counter = { calls: 0 }
  const logic: Partial<LogicShape> = {
    getContactList: () =>
      Effect.sync(() => {
        counter.calls++
        return [{ username: name, nickname: "", avatarUrl: "" }]
      })
  }
  return { counter, logic }
}

const whoAnswers = (logic: LogicShape) =>
  Effect.map(logic.getContactList("anyone"), (contacts) => contacts[0]!.username)

describe("LogicGrpc ↔ LogicGrpcServer", () => {
  it.scopedLive("round-trips every method with int64 values intact", () =>
    Effect.gen(function*() {
      const received: Record<string, unknown> = {}
      const sessions: ReadonlyArray<SessionInfo> = [{
        sessionId: "0",
        name: "Resonance Room",
        type: 2,
        avatarUrl: "",
        unreadCount: int64Max - 1n,
        lastReadSeq: 2n ** 53n + 1n,
        lastMessage: message
      }, {
        sessionId: "g-1",
        name: "empty",
        type: 2,
        avatarUrl: "",
        unreadCount: 0n,
        lastReadSeq: 0n,
        lastMessage: undefined
      }]
      const contacts: ReadonlyArray<ContactInfo> = [{ username: "bob", nickname: "Bob", avatarUrl: "" }]
      const page: InboxPage = {
        events: [{ inboxId: 2n ** 60n, message }, { inboxId: 2n ** 60n + 1n, message: undefined }],
        nextCursorId: 2n ** 60n + 1n,
        hasMore: true
      }
      const batch: PresenceBatch = {
        seqId: 2n ** 50n,
        gatewayId: "gateway-service-001",
        onlineBatch: [{ username: "alice", remoteIp: "10.0.0.1", timestamp: 1_700_000_000n }],
        offlineBatch: [{ username: "bob", timestamp: 1_700_000_002n }]
      }
      const address = yield* serveFake({
        login: (input) => Effect.sync(() => (received.login = input, { accessToken: "token-login", user })),
        register: (input) => Effect.sync(() => (received.register = input, { accessToken: "token-register", user })),
        validateToken: (token) => Effect.sync(() => (received.validateToken = token, user)),
        sendMessage: (input, origin) =>
          Effect.sync(() => (received.sendMessage = [input, origin], { msgId: int64Max, seqId: 42n })),
        syncStatus: (input) => Effect.sync(() => void (received.syncStatus = input)),
        getSessionList: (username, page) =>
          Effect.sync(() => (received.getSessionList = [username, page], { sessions, nextPageToken: "next-page" })),
        createSession: (input) => Effect.sync(() => (received.createSession = input, "group-7")),
        getHistoryMessages: (input) => Effect.sync(() => (received.getHistoryMessages = input, [message])),
        getContactList: (username) => Effect.sync(() => (received.getContactList = username, contacts)),
        searchUser: (query) => Effect.sync(() => (received.searchUser = query, contacts)),
        updateReadPosition: (input) => Effect.sync(() => (received.updateReadPosition = input, int64Max - 7n)),
        pullInboxDelta: (input) => Effect.sync(() => (received.pullInboxDelta = input, page))
      })
      const logic = yield* staticClient([address])

      expect(yield* logic.login({ username: "alice", password: "pw" })).toStrictEqual({ accessToken: "token-login", user })
      expect(received.login).toStrictEqual({ username: "alice", password: "pw" })

      expect(yield* logic.register({ username: "alice", password: "pw", nickname: "Alice" })).toStrictEqual({
        accessToken: "token-register",
        user
      })
      expect(received.register).toStrictEqual({ username: "alice", password: "pw", nickname: "Alice" })

      expect(yield* logic.validateToken("jwt")).toStrictEqual(user)
      expect(received.validateToken).toBe("jwt")

      expect(yield* logic.sendMessage(chat, { idempotencyKey: "boot:1:seq" })).toStrictEqual({ msgId: int64Max, seqId: 42n })
      const [sent, origin] = received.sendMessage as [typeof chat, unknown]
      expect(sent).toMatchObject(chat)
      expect(origin).toStrictEqual({ idempotencyKey: "boot:1:seq" })

      yield* logic.syncStatus(batch)
      expect(received.syncStatus).toStrictEqual(batch)

      expect(yield* logic.getSessionList("alice", { limit: 50n, pageToken: "abc" })).toStrictEqual({ sessions, nextPageToken: "next-page" })
      expect(received.getSessionList).toStrictEqual(["alice", { limit: 50n, pageToken: "abc" }])

      const create = { creatorUsername: "alice", members: ["bob", "carol"], name: "team", type: 2 }
      expect(yield* logic.createSession(create)).toBe("group-7")
      expect(received.createSession).toStrictEqual(create)

      const history = { username: "alice", sessionId: "0", limit: 20n, beforeSeq: int64Max }
      expect(yield* logic.getHistoryMessages(history)).toStrictEqual([message])
      expect(received.getHistoryMessages).toStrictEqual(history)

      expect(yield* logic.getContactList("alice")).toStrictEqual(contacts)
      expect(received.getContactList).toBe("alice")

      expect(yield* logic.searchUser("bo")).toStrictEqual(contacts)
      expect(received.searchUser).toBe("bo")

      const read = { username: "alice", sessionId: "0", seqId: 2n ** 62n }
      expect(yield* logic.updateReadPosition(read)).toBe(int64Max - 7n)
      expect(received.updateReadPosition).toStrictEqual(read)

      const inbox = { username: "alice", cursorId: 2n ** 59n, limit: 200n }
      expect(yield* logic.pullInboxDelta(inbox)).toStrictEqual(page)
      expect(received.pullInboxDelta).toStrictEqual(inbox)
    }))

  it.scopedLive("maps LogicError codes to gRPC statuses and back", () =>
    Effect.gen(function*() {
      const codes: ReadonlyArray<FailureCode> = [
        "invalid_argument",
        "unauthenticated",
        "permission_denied",
        "not_found",
        "already_exists",
        "resource_exhausted",
        "deadline_exceeded",
        "internal",
        "unavailable"
      ]
      const address = yield* serveFake({
        getContactList: (code) => Effect.fail(logicError(code as FailureCode, `refused: ${code}`)),
        searchUser: () => Effect.die(new Error("a bug in the Logic"))
      })
      const logic = yield* staticClient([address], { retries: 0 })
      for (const code of codes) {
        expect(yield* failureOf(logic.getContactList(code))).toStrictEqual({ code, message: `refused: ${code}` })
      }
      expect(yield* failureOf(logic.searchUser("x"))).toStrictEqual({ code: "internal", message: "internal error" })
    }))

  it.scopedLive("SendMessage refusals travel in the response's error field, as the Go Logic sends them", () =>
    Effect.gen(function*() {
      const address = yield* serveFake({
        sendMessage: (input) => {
          switch (input.content) {
            case "intruder":
              return Effect.fail(logicError("permission_denied", "not a session member"))
            case "too long":
              return Effect.fail(logicError("invalid_argument", "content is too long"))
            case "ghost":
              return Effect.fail(logicError("not_found", "session not found"))
            default:
              return Effect.succeed({ msgId: 1n, seqId: 1n })
          }
        },
        validateToken: () => Effect.fail(logicError("unauthenticated", "token expired"))
      })
      const logic = yield* staticClient([address])

      expect(yield* failureOf(logic.sendMessage({ ...chat, content: "intruder" }))).toStrictEqual({
        code: "permission_denied",
        message: "not a session member"
      })
      expect(yield* failureOf(logic.sendMessage({ ...chat, content: "too long" }))).toStrictEqual({
        code: "invalid_argument",
        message: "content is too long"
      })
      expect(yield* failureOf(logic.sendMessage({ ...chat, content: "ghost" }))).toStrictEqual({
        code: "not_found",
        message: "session not found"
      })
      expect((yield* failureOf(logic.validateToken("stale"))).code).toBe("unauthenticated")

      // What a Go gateway (or any raw client) sees on the wire: status OK with `error` set.
      const raw = new ChatServiceClient(address, grpc.credentials.createInsecure())
      yield* Effect.addFinalizer(() => Effect.sync(() => raw.close()))
      const response = yield* Effect.async<SendMessageResponse, grpc.ServiceError>((resume) => {
        raw.sendMessage({ ...chat, content: "intruder", idempotencyKey: "" }, (error, value) =>
          resume(error === null ? Effect.succeed(value) : Effect.fail(error)))
      })
      expect(response).toStrictEqual({ msgId: 0n, seqId: 0n, error: "not a session member" })
    }))

  it.scopedLive("a response a slow Logic cannot give in time fails with deadline_exceeded and cancels the handler", () =>
    Effect.gen(function*() {
      const started = yield* Deferred.make<void>()
      const interrupted = yield* Deferred.make<void>()
      const address = yield* serveFake({
        getSessionList: () =>
          Deferred.succeed(started, undefined).pipe(
            Effect.zipRight(Effect.never),
            Effect.onInterrupt(() => Deferred.succeed(interrupted, undefined))
          )
      })
      const logic = yield* staticClient([address], { deadline: "300 millis", retries: 3 })
      const error = yield* Effect.flip(logic.getSessionList("alice")).pipe(Effect.timeout("10 seconds"))
      expect(error.code).toBe("deadline_exceeded")
      expect(yield* Deferred.isDone(started)).toBe(true)
      yield* Deferred.await(interrupted).pipe(Effect.timeout("10 seconds"))
    }))

  it.scopedLive("balances calls round-robin over the endpoints", () =>
    Effect.gen(function*() {
      const a = countingLogic("a")
      const b = countingLogic("b")
      const addressA = yield* serveFake(a.logic)
      const addressB = yield* serveFake(b.logic)
      const logic = yield* staticClient([`grpc://${addressA}`, addressB])
      const answers: Array<string> = []
      for (let i = 0; i < 10; i++) answers.push(yield* whoAnswers(logic))
      expect(a.counter.calls).toBe(5)
      expect(b.counter.calls).toBe(5)
      for (let i = 1; i < answers.length; i++) expect(answers[i]).not.toBe(answers[i - 1])
    }))

  it.scopedLive("follows the endpoint set: a removed endpoint stops getting calls, an added one starts", () =>
    Effect.gen(function*() {
      const a = countingLogic("a")
      const b = countingLogic("b")
      const c = countingLogic("c")
      const addressA = yield* serveFake(a.logic)
      const addressB = yield* serveFake(b.logic)
      const addressC = yield* serveFake(c.logic)
      const endpoints = yield* SubscriptionRef.make<ReadonlyArray<string>>([addressA, addressB])
      const logic = yield* buildLogic(
        LogicGrpc.layer({ endpoints: Effect.succeed(endpoints), deadline: "5 seconds", retries: 2 })
      )
      const answersOf = (n: number) => Effect.all(Array.from({ length: n }, () => whoAnswers(logic)))

      expect(new Set(yield* answersOf(4))).toStrictEqual(new Set(["a", "b"]))

      yield* SubscriptionRef.set(endpoints, [addressA])
      yield* eventually(Effect.filterOrFail(answersOf(6), (answers) => answers.every((name) => name === "a")))
      const bCalls = b.counter.calls
      yield* answersOf(6)
      expect(b.counter.calls).toBe(bCalls)

      yield* SubscriptionRef.set(endpoints, [addressA, `grpc://${addressC}`])
      yield* eventually(Effect.filterOrFail(answersOf(4), (answers) => answers.includes("c")))
      expect(new Set(yield* answersOf(4))).toStrictEqual(new Set(["a", "c"]))
    }))

  it.scopedLive("with no endpoint, fails fast with unavailable", () =>
    Effect.gen(function*() {
      const metrics = recordingMetrics()
      const logic = yield* staticClient([], { deadline: "60 seconds", retries: 5 }, metrics.layer)
      const failure = yield* failureOf(logic.getSessionList("alice")).pipe(Effect.timeout("5 seconds"))
      expect(failure).toStrictEqual({ code: "unavailable", message: "no logic-service instance" })
      expect(metrics.grpc).toStrictEqual([])
    }))

  it.scopedLive("a stopped server answers UNAVAILABLE: retried, then unavailable within the deadline", () =>
    Effect.gen(function*() {
      const metrics = recordingMetrics()
      const serverScope = yield* Scope.make()
      const address = yield* serveFake({ getContactList: () => Effect.succeed([]) }).pipe(Scope.extend(serverScope))
      const logic = yield* staticClient([address], { deadline: "3 seconds", retries: 3, backoff: "10 millis" }, metrics.layer)
      expect(yield* logic.getContactList("alice")).toStrictEqual([])

      yield* Scope.close(serverScope, Exit.void)
      const failure = yield* failureOf(logic.getContactList("alice")).pipe(Effect.timeout("5 seconds"))
      expect(failure.code).toBe("unavailable")
      expect(metrics.grpc).toStrictEqual([
        { method: "SessionService/GetContactList", code: "OK" },
        ...Array.from({ length: 4 }, () => ({ method: "SessionService/GetContactList", code: "UNAVAILABLE" }))
      ])
    }))

  it.scopedLive("retries UNAVAILABLE on another endpoint", () =>
    Effect.gen(function*() {
      const serverScope = yield* Scope.make()
      const down = yield* serveFake({}).pipe(Scope.extend(serverScope))
      yield* Scope.close(serverScope, Exit.void)
      const up = countingLogic("up")
      const address = yield* serveFake(up.logic)
      const logic = yield* staticClient([down, address], { retries: 1, backoff: "5 millis" })
      for (let i = 0; i < 6; i++) expect(yield* whoAnswers(logic)).toBe("up")
      expect(up.counter.calls).toBe(6)
    }))

  it.scopedLive("sends a W3C traceparent and the server continues the trace", () =>
    Effect.gen(function*() {
      const headers: Array<string> = []
      const rawServer = new grpc.Server()
      rawServer.addService(AuthServiceService, {
        login: (call: grpc.ServerUnaryCall<unknown, unknown>, callback: grpc.sendUnaryData<unknown>) => {
          headers.push(String(call.metadata.get("traceparent")[0]))
          callback(null, { accessToken: "t", user: undefined })
        }
      })
      const rawPort = yield* Effect.acquireRelease(
        Effect.async<number, Error>((resume) =>
          rawServer.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (error, port) =>
            resume(error === null ? Effect.succeed(port) : Effect.fail(error)))
        ),
        () => Effect.sync(() => rawServer.forceShutdown())
      )
      const rawClient = yield* staticClient([`127.0.0.1:${rawPort}`])
      const rootTraceId = yield* Effect.gen(function*() {
        yield* rawClient.login({ username: "alice", password: "pw" })
        return (yield* Effect.currentSpan).traceId
      }).pipe(Effect.withSpan("test.root"))
      expect(headers).toHaveLength(1)
      expect(headers[0]).toMatch(new RegExp(`^00-${rootTraceId}-[0-9a-f]{16}-01$`))

      const seen: Array<{ traceId: string; parentSpanId: string | undefined }> = []
      const address = yield* serveFake({
        getContactList: () =>
          Effect.map(Effect.currentSpan, (span) => {
            seen.push({
              traceId: span.traceId,
              parentSpanId: Option.getOrUndefined(Option.map(span.parent, (parent) => parent.spanId))
            })
            return []
          }).pipe(Effect.orDie)
      })
      const logic = yield* staticClient([address])
      const recording = yield* recordingTracer
      const root = yield* Effect.gen(function*() {
        yield* logic.getContactList("alice")
        return yield* Effect.currentSpan
      }).pipe(Effect.withSpan("test.root"), Effect.withTracer(recording.tracer))
      const clientSpan = recording.spans.find((span) => span.name === "Logic.getContactList")
      expect(clientSpan?.kind).toBe("client")
      expect(Option.map(clientSpan!.parent, (parent) => parent.spanId)).toStrictEqual(Option.some(root.spanId))
      expect(seen).toStrictEqual([{ traceId: root.traceId, parentSpanId: clientSpan!.spanId }])
    }))

  it.scopedLive("serveLogic binds the port it was given and stops with its scope", () =>
    Effect.gen(function*() {
      const scope = yield* Scope.make()
      const { port } = yield* serveLogic(fakeLogic({ searchUser: () => Effect.succeed([]) }), {
        port: 0,
        host: "127.0.0.1"
      }).pipe(Scope.extend(scope), Effect.provide(InternalAuth.layerTest), withFrontDoor)
      expect(port).toBeGreaterThan(0)
      const logic = yield* staticClient([`127.0.0.1:${port}`], { retries: 0 })
      expect(yield* logic.searchUser("x")).toStrictEqual([])
      yield* Scope.close(scope, Exit.void)
      expect((yield* failureOf(logic.searchUser("x"))).code).toBe("unavailable")
    }))
})
