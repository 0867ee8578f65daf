import { Context, Duration, Effect, Layer, Logger, LogLevel, Tracer } from "effect"
import { Authenticator } from "../../src/application/Authenticator.js"
import { ConnectionHub } from "../../src/application/ConnectionHub.js"
import type { LogicShape } from "../../src/application/ports/Logic.js"
import { Logic } from "../../src/application/ports/Logic.js"
import type { MetricsShape } from "../../src/application/ports/Metrics.js"
import { Metrics } from "../../src/application/ports/Metrics.js"
import type { ReadinessShape } from "../../src/application/Readiness.js"
import { Readiness } from "../../src/application/Readiness.js"
import { logicError } from "../../src/domain/Errors.js"
import type { PushMessage } from "../../src/domain/Model.js"
import type { HttpOptions } from "../../src/adapters/http/HttpApi.js"
import * as HttpApi from "../../src/adapters/http/HttpApi.js"
import type { RateLimits } from "../../src/adapters/http/Limits.js"
import { Accounts } from "../../src/application/Accounts.js"
import { Sessions } from "../../src/application/Sessions.js"
import type { ClientAddressOptions } from "../../src/adapters/platform/net/ClientAddress.js"
import { makeClientAddressing } from "../../src/adapters/platform/net/ClientAddress.js"
import * as FrontDoor from "../../src/adapters/platform/net/FrontDoor.js"
import * as NodeServer from "../../src/adapters/platform/net/NodeServer.js"
import { Either } from "effect"

/** The adapter's options and those of the use cases behind it, as the configuration has them. */
export type TestHttpOptions = Omit<HttpOptions, "addressing" | "rateLimits"> & ClientAddressOptions & {
  readonly rateLimits: RateLimits & {
    readonly failedLoginsPerUserPerIp?: number
    readonly failedLoginWindowSeconds?: number
  }
  readonly maxGroupMembers?: number
}

export const baseOptions: TestHttpOptions = {
  corsOrigins: ["*"],
  maxBodyBytes: 64 * 1024,
  rateLimits: { authPerIpPerMinute: 0, sessionPerUserPerSecond: 0 },
  ipAllow: [],
  ipDeny: [],
  trustedProxies: []
}

/** HttpOptions with the address lists compiled, as main does once at start. */
export const httpOptions = (options: Partial<TestHttpOptions> = {}): HttpOptions => {
  const merged = { ...baseOptions, ...options }
  return { ...merged, addressing: Either.getOrThrow(makeClientAddressing(merged)) }
}

/** The use cases the HTTP API serves, with the options a test gave. */
const useCases = (options: Partial<TestHttpOptions>) =>
  Layer.merge(
    Accounts.layer({
      failuresPerUserAndAddress: options.rateLimits?.failedLoginsPerUserPerIp ?? 0,
      failureWindow: Duration.seconds(options.rateLimits?.failedLoginWindowSeconds ?? 900)
    }),
    Sessions.layer(options.maxGroupMembers === undefined ? undefined : { maxGroupMembers: options.maxGroupMembers })
  )

/** Tokens the fake Logic accepts, and the user each one stands for. */
export const tokens: Record<string, string> = { "token-alice": "alice", "token-bob": "bob" }

export const message = (overrides: Partial<PushMessage> = {}): PushMessage => ({
  msgId: 123456789012345678n,
  seqId: 42n,
  sessionId: "s1",
  fromUsername: "bob",
  toUsername: "",
  content: "hi",
  type: "text",
  timestamp: 1_700_000_000n,
  sessionMeta: undefined,
  ...overrides
})

/** A Logic that records every call it gets and answers with plausible data. */
export const recordingLogic = (calls: Array<{ method: string; input: unknown }>, overrides: Partial<LogicShape> = {}) => {
  const record = (method: string, input: unknown) => Effect.sync(() => void calls.push({ method, input }))
  const logic: Partial<LogicShape> = {
    login: (input) =>
      Effect.zipRight(
        record("login", input),
        input.password === "wrong"
          ? Effect.fail(logicError("unauthenticated", "invalid username or password"))
          : Effect.succeed({
            accessToken: `token-${input.username}`,
            user: { username: input.username, nickname: "Alice", avatarUrl: "" }
          })
      ),
    register: (input) =>
      Effect.zipRight(
        record("register", input),
        Effect.succeed({
          accessToken: `token-${input.username}`,
          user: { username: input.username, nickname: input.nickname, avatarUrl: "" }
        })
      ),
    validateToken: (token) =>
      token === "token-down"
        ? Effect.fail(logicError("unavailable", "logic is down"))
        : tokens[token] === undefined
        ? Effect.fail(logicError("unauthenticated", "invalid token"))
        : Effect.succeed({ username: tokens[token]!, nickname: "", avatarUrl: "" }),
    revokeToken: (token) =>
      Effect.zipRight(
        record("revokeToken", token),
        Effect.succeed({ cursor: 1n, tokenId: token, username: tokens[token] ?? "", expiresAt: 4_102_444_800n })
      ),
    getSessionList: (username) =>
      Effect.zipRight(
        record("getSessionList", username),
        Effect.succeed({
          sessions: [{
            sessionId: "s1",
            name: "Room",
            type: 2,
            avatarUrl: "",
            unreadCount: 3n,
            lastReadSeq: 39n,
            lastMessage: message()
          }],
          nextPageToken: ""
        })
      ),
    createSession: (input) => Effect.as(record("createSession", input), "group-1"),
    getHistoryMessages: (input) => Effect.as(record("getHistoryMessages", input), [message(), message({ seqId: 43n })]),
    getContactList: (username) =>
      Effect.as(record("getContactList", username), [{ username: "bob", nickname: "Bob", avatarUrl: "" }]),
    searchUser: (query) => Effect.as(record("searchUser", query), [{ username: "carol", nickname: "", avatarUrl: "" }]),
    updateReadPosition: (input) => Effect.as(record("updateReadPosition", input), 0n),
    pullInboxDelta: (input) =>
      Effect.as(record("pullInboxDelta", input), {
        events: [{ inboxId: 7n, message: message() }],
        nextCursorId: 7n,
        hasMore: true
      })
  }
  return { ...logic, ...overrides }
}

export interface Served {
  readonly url: string
  readonly calls: Array<{ method: string; input: unknown }>
  readonly metrics: Array<{ route: string; code: number }>
  readonly spans: Array<string>
  readonly logs: Array<{ message: string; annotations: Record<string, unknown> }>
  readonly readiness: ReadinessShape
}

/** The HTTP adapter on a real server on an ephemeral port, with fakes behind it. */
export const serve = (options: Partial<TestHttpOptions> = {}, logic: Partial<LogicShape> = {}) =>
  Effect.gen(function*() {
    const calls: Array<{ method: string; input: unknown }> = []
    const metrics: Array<{ route: string; code: number }> = []
    const spans: Array<string> = []
    const logs: Array<{ message: string; annotations: Record<string, unknown> }> = []
    const recordingMetrics: MetricsShape = {
      ...Metrics.noop,
      httpRequest: (route, code) => void metrics.push({ route, code })
    }
    const baseTracer = yield* Effect.tracer
    const tracer = Tracer.make({
      span: (name, ...rest) => {
        spans.push(name)
        return baseTracer.span(name, ...rest)
      },
      context: baseTracer.context
    })
    const logger = Logger.make(({ annotations, message }) => {
      const record: Record<string, unknown> = {}
      for (const [key, value] of annotations) record[key] = value
      logs.push({ message: String(Array.isArray(message) ? message[0] : message), annotations: record })
    })
    const http = httpOptions(options)
    const layer = HttpApi.layer(http).pipe(
      Layer.provide(useCases(options)),
      Layer.provideMerge(Authenticator.layer()),
      Layer.provideMerge(
        Layer.mergeAll(
          ConnectionHub.layer,
          NodeServer.layer({ port: 0, host: "127.0.0.1", addressing: http.addressing }).pipe(Layer.provide(FrontDoor.layerTest())),
          Readiness.layer,
          Layer.succeed(Metrics, recordingMetrics),
          Logic.layerTest(recordingLogic(calls, logic))
        )
      ),
      Layer.provide(Layer.setTracer(tracer)),
      Layer.provide(Logger.replace(Logger.defaultLogger, logger)),
      Layer.provide(Logger.minimumLogLevel(LogLevel.Debug))
    )
    const context = yield* Layer.build(layer)
    const { port } = Context.get(context, NodeServer.NodeServer)
    const served: Served = {
      url: `http://127.0.0.1:${port}`,
      calls,
      metrics,
      spans,
      logs,
      readiness: Context.get(context, Readiness)
    }
    return served
  })

export const json = (body: unknown, headers: Record<string, string> = {}): RequestInit => ({
  method: "POST",
  headers: { "content-type": "application/json", ...headers },
  body: JSON.stringify(body)
})

export const bearer = (token = "token-alice") => ({ authorization: `Bearer ${token}` })

export const call = (url: string, init?: RequestInit) =>
  Effect.promise(async () => {
    const response = await fetch(url, init)
    const text = await response.text()
    let body: any
    try {
      body = text === "" ? undefined : JSON.parse(text)
    } catch {
      body = text
    }
    return { status: response.status, headers: response.headers, body }
  })

export const callBinary = (url: string, init: RequestInit) =>
  Effect.promise(async () => {
    const response = await fetch(url, init)
    return { status: response.status, headers: response.headers, bytes: new Uint8Array(await response.arrayBuffer()) }
  })

export const connect = (service: "AuthService" | "SessionService", method: string) =>
  `/resonance.gateway.v1.${service}/${method}`
