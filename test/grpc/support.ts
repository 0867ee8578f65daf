import { Context, Effect, Layer, Schedule, Tracer } from "effect"
import type { ConfigError, Scope } from "effect"
import * as Http2 from "node:http2"
import * as Net from "node:net"
import { Logic, unavailableLogic } from "../../src/application/ports/Logic.js"
import type { LogicShape } from "../../src/application/ports/Logic.js"
import { Metrics } from "../../src/application/ports/Metrics.js"
import type { MetricsShape } from "../../src/application/ports/Metrics.js"
import type { ChatRequest } from "../../src/domain/Model.js"
import { withFrontDoor } from "../support/door.js"
import type { Settings } from "../support/gateway.js"
import { mergeSettings, testGateway } from "../support/gateway.js"
import { freePort } from "../support/process.js"
import * as InternalAuth from "../../src/adapters/platform/grpc/Security.js"
import { makeUnaryServer } from "../../src/adapters/platform/grpc/UnaryServer.js"
import type { UnaryRoute, UnaryServer, UnaryServerOptions } from "../../src/adapters/platform/grpc/UnaryServer.js"
import { ConnectionHub } from "../../src/application/ConnectionHub.js"
import type { ConnectionRegistry } from "../../src/application/ConnectionHub.js"
import * as LogicGrpc from "../../src/adapters/logic-grpc/LogicGrpc.js"
import { serveLogic } from "../../src/adapters/logic-server/LogicGrpcServer.js"

export { recordingMetrics } from "../support/helpers.js"
export type { GrpcMetric } from "../support/helpers.js"

/**
 * The test gateway serving PushService (`push.enabled`) on a free loopback port, internal callers
 * admitted without credentials unless `config` says otherwise (`internal.*`): its port and its hub.
 */
export const servePush = (
  options: { readonly config?: Settings; readonly metrics?: Partial<MetricsShape> } = {}
) =>
  Effect.gen(function*() {
    // The graph keeps its PushServer to itself: the port is chosen here, as the process tests choose theirs.
    const port = yield* Effect.promise(freePort)
    const context = yield* Layer.build(testGateway({
      config: mergeSettings({ push: { enabled: true }, internal: { insecure: true }, service: { grpc_port: port } }, options.config ?? {}),
      metrics: options.metrics
    }))
    const hub: ConnectionRegistry = Context.get(context, ConnectionHub)
    return { port, hub }
  })

/** The node:http2 unary server alone on an ephemeral 127.0.0.1 port, admitting every peer, serving `routes`. */
export const serveRoutes = (
  routes: ReadonlyArray<UnaryRoute>,
  options: Partial<UnaryServerOptions> = {}
): Effect.Effect<UnaryServer, Error, Scope.Scope> =>
  Effect.flatMap(Effect.provide(InternalAuth.InternalAuth, InternalAuth.layerTest), (security) =>
    makeUnaryServer(routes, security, { port: 0, host: "127.0.0.1", shutdownTimeout: "1 second", ...options }))

/** A route answering each message with itself. */
export const echoRoute = (path = "/test.Echo/Echo"): UnaryRoute => ({ path, handle: (message) => ({ response: message }) })

/** The 5-byte gRPC prefix alone, declaring `length` bytes (compressed when `flag` is 1). */
export const grpcPrefix = (length: number, flag = 0): Buffer => {
  const prefix = Buffer.alloc(5)
  prefix[0] = flag
  prefix.writeUInt32BE(length, 1)
  return prefix
}

/** What came back on one raw stream once it closed. */
export interface RawAnswer {
  readonly headers: Http2.IncomingHttpHeaders
  readonly trailers: Http2.IncomingHttpHeaders
  readonly body: Buffer
  /** The RST_STREAM code the stream closed with (0 when it ended cleanly). */
  readonly rstCode: number
}

/** The gRPC status of a raw answer: in the trailers, or in the headers of a Trailers-Only answer. */
export const statusOf = (answer: Pick<RawAnswer, "headers" | "trailers">): number =>
  Number(answer.trailers["grpc-status"] ?? answer.headers["grpc-status"])

/** A raw HTTP/2 connection (node:http2's client): for what no gRPC library would send. Closed with the scope. */
export const rawSession = (port: number, options: Http2.ClientSessionOptions = {}) =>
  Effect.acquireRelease(
    Effect.sync(() => {
      const session = Http2.connect(`http://127.0.0.1:${port}`, options)
      session.on("error", () => {})
      return session
    }),
    (session) => Effect.sync(() => session.destroy())
  )

/** One raw request on `session`: the stream, its answer once it closes, its response headers once they come. */
export const rawRequest = (
  session: Http2.ClientHttp2Session,
  path: string,
  headers: Http2.OutgoingHttpHeaders = {}
) => {
  const stream = session.request({ ":method": "POST", ":path": path, "content-type": "application/grpc", te: "trailers", ...headers })
  stream.on("error", () => {})
  const chunks: Array<Buffer> = []
  let answerHeaders: Http2.IncomingHttpHeaders = {}
  let trailers: Http2.IncomingHttpHeaders = {}
  const response = new Promise<Http2.IncomingHttpHeaders>((resolve) => stream.once("response", resolve))
  stream.on("response", (received) => (answerHeaders = received))
  stream.on("trailers", (received) => (trailers = received))
  stream.on("data", (chunk: Buffer) => chunks.push(chunk))
  const closed = new Promise<RawAnswer>((resolve) =>
    stream.once("close", () => resolve({ headers: answerHeaders, trailers, body: Buffer.concat(chunks), rstCode: stream.rstCode ?? 0 }))
  )
  return {
    stream,
    /** The response headers (for a Trailers-Only answer, the status too). */
    response: Effect.promise(() => response),
    answer: Effect.promise(() => closed)
  }
}

/** An HPACK integer with an `bits`-bit prefix (RFC 7541 §5.1). */
const hpackInteger = (value: number, bits: number): Array<number> => {
  const max = (1 << bits) - 1
  if (value < max) return [value]
  const bytes = [max]
  let rest = value - max
  while (rest >= 128) {
    bytes.push((rest % 128) + 128)
    rest = Math.floor(rest / 128)
  }
  bytes.push(rest)
  return bytes
}

const h2Frame = (type: number, flags: number, stream: number, payload: Buffer = Buffer.alloc(0)): Buffer => {
  const head = Buffer.alloc(9)
  head.writeUIntBE(payload.byteLength, 0, 3)
  head[3] = type
  head[4] = flags
  head.writeUInt32BE(stream, 5)
  return Buffer.concat([head, payload])
}

/**
 * HTTP/2 frames written by hand (RFC 9113 §6), header fields as HPACK literals without indexing
 * (RFC 7541 §6.2.2): for a caller that does what no HTTP/2 library lets it, such as never reading.
 */
export const h2 = {
  preface: Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", "latin1"),
  settings: (values: ReadonlyArray<readonly [id: number, value: number]>): Buffer => {
    const payload = Buffer.alloc(6 * values.length)
    values.forEach(([id, value], i) => {
      payload.writeUInt16BE(id, 6 * i)
      payload.writeUInt32BE(value, 6 * i + 2)
    })
    return h2Frame(0x4, 0, 0, payload)
  },
  windowUpdate: (stream: number, increment: number): Buffer => {
    const payload = Buffer.alloc(4)
    payload.writeUInt32BE(increment)
    return h2Frame(0x8, 0, stream, payload)
  },
  headers: (stream: number, fields: ReadonlyArray<readonly [string, string]>, endStream = false): Buffer =>
    h2Frame(
      0x1,
      0x4 | (endStream ? 0x1 : 0),
      stream,
      Buffer.concat(fields.map(([name, value]) => {
        const nameBytes = Buffer.from(name, "latin1")
        const valueBytes = Buffer.from(value, "latin1")
        return Buffer.concat([
          Buffer.from([0, ...hpackInteger(nameBytes.byteLength, 7)]),
          nameBytes,
          Buffer.from(hpackInteger(valueBytes.byteLength, 7)),
          valueBytes
        ])
      }))
    ),
  data: (stream: number, payload: Buffer, endStream = false): Buffer => h2Frame(0x0, endStream ? 0x1 : 0, stream, payload),
  /** The request headers of a gRPC call of `path`. */
  grpcRequest: (path: string): Array<readonly [string, string]> => [
    [":method", "POST"],
    [":scheme", "http"],
    [":path", path],
    [":authority", "127.0.0.1"],
    ["content-type", "application/grpc"],
    ["te", "trailers"]
  ]
}

/** A plain TCP connection to 127.0.0.1:`port`, destroyed with the scope. */
export const tcpConnection = (port: number) =>
  Effect.acquireRelease(
    Effect.async<Net.Socket, Error>((resume) => {
      const socket = Net.connect(port, "127.0.0.1", () => resume(Effect.succeed(socket)))
      socket.once("error", (error) => resume(Effect.fail(error)))
    }),
    (socket) => Effect.sync(() => socket.destroy())
  )

/** A fake Logic (Logic.layerTest: unavailable unless overridden) served over real gRPC on 127.0.0.1. */
export const serveFake = (overrides: Partial<LogicShape>): Effect.Effect<string, Error | ConfigError.ConfigError, Scope.Scope> =>
  Effect.gen(function*() {
    const logic = yield* Effect.provide(Logic, Logic.layerTest(overrides))
    const { port } = yield* serveLogic(logic, { port: 0, host: "127.0.0.1", shutdownTimeout: "1 second" }).pipe(
      Effect.provide(InternalAuth.layerTest),
      withFrontDoor
    )
    return `127.0.0.1:${port}`
  })

/** A plain direct chat from alice to bob, as the Logic clients' tests send it. */
export const chat: ChatRequest = {
  sessionId: "single:alice:bob",
  fromUsername: "alice",
  toUsername: "bob",
  content: "hi",
  type: "text",
  timestamp: 1_700_000_001n
}

export const fakeLogic = (overrides: Partial<LogicShape>): LogicShape => ({ ...unavailableLogic, ...overrides })

/** Builds a layer into the current scope and returns the Logic it provides. */
export const buildLogic = (
  layer: Layer.Layer<Logic, never, Metrics | InternalAuth.InternalAuth>,
  metrics: Layer.Layer<Metrics> = Metrics.layerNoop,
  auth: Layer.Layer<InternalAuth.InternalAuth> = InternalAuth.layerTest
): Effect.Effect<LogicShape, never, Scope.Scope> =>
  Effect.map(Layer.build(Layer.provide(layer, Layer.merge(metrics, auth))), (context) => Context.get(context, Logic))

export const staticClient = (
  addresses: ReadonlyArray<string>,
  options: Partial<LogicGrpc.LogicGrpcStaticOptions> = {},
  metrics?: Layer.Layer<Metrics>
) => buildLogic(LogicGrpc.layerStatic(addresses, { deadline: "5 seconds", retries: 2, ...options }), metrics)

/** Retries `check` until it succeeds, for conditions reached asynchronously (watchers). */
export const eventually = <A, E, R>(check: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
  Effect.retry(check, Schedule.spaced("20 millis").pipe(Schedule.compose(Schedule.recurs(250))))

/** A tracer that behaves like the current one and keeps every span it starts. */
export const recordingTracer = Effect.map(Effect.tracer, (base) => {
  const spans: Array<Tracer.Span> = []
  const tracer = Tracer.make({
    span: (name, parent, context, links, startTime, kind, options) => {
      const span = base.span(name, parent, context, links, startTime, kind, options)
      spans.push(span)
      return span
    },
    context: (f, fiber) => base.context(f, fiber)
  })
  return { spans, tracer }
})
