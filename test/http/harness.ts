import { Context, Effect, Layer, Logger, LogLevel, Tracer } from "effect"
import * as NodeServer from "../../src/adapters/platform/net/NodeServer.js"
import type { LogicShape } from "../../src/application/ports/Logic.js"
import type { ReadinessShape } from "../../src/application/Readiness.js"
import { Readiness } from "../../src/application/Readiness.js"
import { logicError } from "../../src/domain/Errors.js"
import type { PushMessage } from "../../src/domain/Model.js"
import type { Settings } from "../support/gateway.js"
import { mergeSettings, testGateway } from "../support/gateway.js"

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

/** The HTTP limits a test starts from: none, so that each test turns on the one it is about. */
export const unlimited: Settings = {
  limits: {
    auth_per_ip_per_minute: 0,
    session_per_user_per_second: 0,
    failed_logins_per_user_per_ip: 0,
    logins_in_flight_per_ip: 0
  }
}

/**
 * The test gateway (`testGateway`) with the recording Logic and metrics as its ports, `config`
 * over `unlimited`; its spans and log lines recorded too.
 */
export const serve = (config: Settings = {}, logic: Partial<LogicShape> = {}) =>
  Effect.gen(function*() {
    const calls: Array<{ method: string; input: unknown }> = []
    const metrics: Array<{ route: string; code: number }> = []
    const spans: Array<string> = []
    const logs: Array<{ message: string; annotations: Record<string, unknown> }> = []
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
    const layer = testGateway({
      config: mergeSettings(unlimited, config),
      logic: recordingLogic(calls, logic),
      metrics: { httpRequest: (route, code) => void metrics.push({ route, code }) },
      logLevel: LogLevel.Debug
    }).pipe(
      Layer.provide(Layer.setTracer(tracer)),
      Layer.provide(Logger.replace(Logger.defaultLogger, logger))
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
