import * as grpc from "@grpc/grpc-js"
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import * as Http2 from "node:http2"
import * as Zlib from "node:zlib"
import { grpcFrame, parseGrpcTimeout, percentEncode } from "../../src/adapters/platform/grpc/UnaryServer.js"
import type { PushMessage } from "../../src/domain/Model.js"
import { PushRequest, PushResponse, PushServiceClient } from "../../src/gen/gateway/v1/push.js"
import { fakeConnection } from "../support/helpers.js"
import { echoRoute, eventually, grpcPrefix, h2, tcpConnection, rawRequest, rawSession, recordingMetrics, servePush, serveRoutes, statusOf as rawStatusOf } from "./support.js"

/**
 * PushService is served by a gRPC unary server on node:http2 (not grpc-js): these are the edges
 * of the protocol, driven by grpc-js clients (what a Node Task would use) and by a raw HTTP/2
 * client for what no well-behaved client sends.
 */

const PATH = "/resonance.gateway.v1.PushService/Push"

const message: PushMessage = {
  msgId: 42n,
  seqId: 1n,
  sessionId: "0",
  fromUsername: "task",
  toUsername: "",
  content: "hello",
  type: "text",
  timestamp: 1_700_000_000n,
  sessionMeta: { name: "Resonance Room", type: 2 }
}
const request = { toUsernames: ["alice"], message }

/** The largest request PushService takes: the unary server's default, which the gateway keeps. */
const MAX_REQUEST_BYTES = 4 * 1024 * 1024

const startPushServer = Effect.gen(function*() {
  const metrics = recordingMetrics()
  const { hub, port } = yield* servePush({ metrics: metrics.shape })
  const alice = fakeConnection("alice")
  hub.add(alice)
  return { port, alice, metrics }
})

/** A unary call through grpc-js with the bytes `serialize` makes, on a client closed afterwards. */
const callWith = (port: number, path: string, bytes: Buffer, options: grpc.ClientOptions = {}) =>
  Effect.async<PushResponse, grpc.ServiceError>((resume) => {
    const client = new grpc.Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure(), options)
    client.makeUnaryRequest(
      path,
      () => bytes,
      (buffer: Buffer) => PushResponse.decode(buffer),
      {},
      new grpc.Metadata(),
      { deadline: Date.now() + 3_000 },
      (error, response) => {
        client.close()
        resume(error ? Effect.fail(error) : Effect.succeed(response!))
      }
    )
  })

/** A grpc-js call of the echo route (test/grpc/support.ts) on a client of its own. */
const echoCall = (port: number, text: string, path = "/test.Echo/Echo") =>
  Effect.async<Buffer, grpc.ServiceError>((resume) => {
    const client = new grpc.Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure())
    client.makeUnaryRequest(
      path,
      (value: Buffer) => value,
      (buffer: Buffer) => buffer,
      Buffer.from(text),
      new grpc.Metadata(),
      { deadline: Date.now() + 3_000 },
      (error, response) => {
        client.close()
        resume(error ? Effect.fail(error) : Effect.succeed(response!))
      }
    )
  })

const encoded = (value: PushRequest) => Buffer.from(PushRequest.encode(value).finish())

interface RawAnswer {
  readonly headers: Http2.IncomingHttpHeaders
  readonly trailers: Http2.IncomingHttpHeaders
  readonly body: Buffer
}

/** One request on a raw HTTP/2 connection: what a broken or hostile client can send. */
const rawCall = (port: number, headers: Http2.OutgoingHttpHeaders, body: Buffer) =>
  Effect.async<RawAnswer, Error>((resume) => {
    const session = Http2.connect(`http://127.0.0.1:${port}`)
    session.on("error", (error) => resume(Effect.fail(error)))
    const stream = session.request({ ":method": "POST", ":path": PATH, "content-type": "application/grpc", te: "trailers", ...headers })
    let answer: Http2.IncomingHttpHeaders = {}
    let trailers: Http2.IncomingHttpHeaders = {}
    const chunks: Array<Buffer> = []
    stream.on("response", (received) => (answer = received))
    stream.on("trailers", (received) => (trailers = received))
    stream.on("data", (chunk: Buffer) => chunks.push(chunk))
    stream.on("error", () => {})
    stream.on("close", () => {
      session.close()
      resume(Effect.succeed({ headers: answer, trailers, body: Buffer.concat(chunks) }))
    })
    stream.end(body)
  })

/** The gRPC status of a raw answer: in the trailers, or in the headers of a Trailers-Only answer. */
const statusOf = (answer: RawAnswer) => Number(answer.trailers["grpc-status"] ?? answer.headers["grpc-status"])

describe("PushService over the node:http2 unary server", () => {
  it.scopedLive("an unknown method is UNIMPLEMENTED and not counted under a made-up label", () =>
    Effect.gen(function*() {
      const { port, alice, metrics } = yield* startPushServer
      const error = yield* Effect.flip(callWith(port, "/resonance.gateway.v1.PushService/Nope", encoded(request)))
      expect(error.code).toBe(grpc.status.UNIMPLEMENTED)
      expect(error.details).toContain("/resonance.gateway.v1.PushService/Nope")
      expect(alice.frames).toEqual([])
      expect(metrics.grpc).toEqual([])
    }))

  it.scopedLive("bytes that are no PushRequest are INTERNAL, deliver nothing, and the next call is served", () =>
    Effect.gen(function*() {
      const { port, alice, metrics } = yield* startPushServer
      // Field 1, length 16, one byte of it present.
      const error = yield* Effect.flip(callWith(port, PATH, Buffer.from([0x0a, 0x10, 0x41])))
      expect(error.code).toBe(grpc.status.INTERNAL)
      expect(error.details).toBe("cannot decode the PushRequest")
      expect(alice.frames).toEqual([])
      const response = yield* callWith(port, PATH, encoded(request))
      expect(response.failedUsernames).toEqual([])
      expect(alice.frames).toHaveLength(1)
      expect(metrics.grpc.map((entry) => entry.code)).toEqual(["INTERNAL", "OK"])
    }))

  it.scopedLive("a request over the size limit is RESOURCE_EXHAUSTED, also when it only grows past it inflated", () =>
    Effect.gen(function*() {
      const { port, alice } = yield* startPushServer
      // Were it taken, alice would get the push.
      const big = encoded({ toUsernames: ["alice", "u".repeat(MAX_REQUEST_BYTES)], message })
      expect(big.byteLength).toBeGreaterThan(MAX_REQUEST_BYTES)
      const error = yield* Effect.flip(callWith(port, PATH, big))
      expect(error.code).toBe(grpc.status.RESOURCE_EXHAUSTED)
      // Compresses to far under the limit; inflated it is over it.
      const bomb = encoded({ toUsernames: ["alice", "a".repeat(MAX_REQUEST_BYTES)], message })
      expect(bomb.byteLength).toBeGreaterThan(MAX_REQUEST_BYTES)
      const zipped = yield* rawCall(port, { "grpc-encoding": "gzip" }, grpcFrameCompressed(Zlib.gzipSync(bomb)))
      expect(zipped.body.byteLength).toBe(0)
      expect(statusOf(zipped)).toBe(grpc.status.RESOURCE_EXHAUSTED)
      expect(alice.frames).toEqual([])
      // The server goes on serving requests within the limit.
      yield* callWith(port, PATH, encoded(request))
      expect(alice.frames).toHaveLength(1)
    }))

  it.scopedLive("a grpc-js client compressing with gzip is served; an unknown encoding is UNIMPLEMENTED naming those accepted", () =>
    Effect.gen(function*() {
      const { port, alice } = yield* startPushServer
      const client = new PushServiceClient(`127.0.0.1:${port}`, grpc.credentials.createInsecure(), {
        "grpc.default_compression_algorithm": 2
      })
      yield* Effect.addFinalizer(() => Effect.sync(() => client.close()))
      const response = yield* Effect.async<PushResponse, grpc.ServiceError>((resume) => {
        client.push({ toUsernames: ["alice", "bob"], message }, (error, value) =>
          resume(error ? Effect.fail(error) : Effect.succeed(value)))
      })
      expect(response).toEqual({ msgId: 42n, error: "", failedUsernames: ["bob"] })
      expect(alice.frames).toHaveLength(1)

      const brotli = yield* rawCall(port, { "grpc-encoding": "br" }, grpcFrameCompressed(Zlib.brotliCompressSync(encoded(request))))
      expect(statusOf(brotli)).toBe(grpc.status.UNIMPLEMENTED)
      expect(brotli.headers["grpc-accept-encoding"]).toBe("identity,gzip,deflate")
      expect(alice.frames).toHaveLength(1)
    }))

  it.scopedLive("malformed framing from a raw HTTP/2 client is refused without delivering; the reply to a good one decodes", () =>
    Effect.gen(function*() {
      const { port, alice } = yield* startPushServer
      const one = grpcFrame(encoded(request))

      const notPost = yield* rawCall(port, { ":method": "PUT" }, one)
      expect(notPost.headers[":status"]).toBe(405)
      const notGrpc = yield* rawCall(port, { "content-type": "application/json" }, Buffer.from("{}"))
      expect(notGrpc.headers[":status"]).toBe(415)
      const empty = yield* rawCall(port, {}, Buffer.alloc(0))
      expect(statusOf(empty)).toBe(grpc.status.INTERNAL)
      const two = yield* rawCall(port, {}, Buffer.concat([one, one]))
      expect(statusOf(two)).toBe(grpc.status.INTERNAL)
      const truncated = yield* rawCall(port, {}, one.subarray(0, one.byteLength - 3))
      expect(statusOf(truncated)).toBe(grpc.status.INTERNAL)
      const flaggedButPlain = yield* rawCall(port, {}, Buffer.concat([Buffer.from([1]), one.subarray(1)]))
      expect(statusOf(flaggedButPlain)).toBe(grpc.status.INTERNAL)
      expect(alice.frames).toEqual([])

      const good = yield* rawCall(port, {}, one)
      expect(good.headers[":status"]).toBe(200)
      expect(good.headers["content-type"]).toBe("application/grpc+proto")
      expect(statusOf(good)).toBe(grpc.status.OK)
      expect(good.body.readUInt32BE(1)).toBe(good.body.byteLength - 5)
      expect(PushResponse.decode(good.body.subarray(5))).toEqual({ msgId: 42n, error: "", failedUsernames: [] })
      expect(alice.frames).toHaveLength(1)
    }))

  it.scopedLive("a caller that resets its stream half-way through the body costs nothing and delivers nothing", () =>
    Effect.gen(function*() {
      const { port, alice } = yield* startPushServer
      const one = grpcFrame(encoded(request))
      yield* Effect.async<void>((resume) => {
        const session = Http2.connect(`http://127.0.0.1:${port}`)
        session.on("error", () => {})
        const stream = session.request({ ":method": "POST", ":path": PATH, "content-type": "application/grpc" })
        stream.on("error", () => {})
        stream.write(one.subarray(0, 4), () => {
          stream.close(Http2.constants.NGHTTP2_CANCEL)
          stream.on("close", () => {
            session.close()
            resume(Effect.void)
          })
        })
      })
      const response = yield* callWith(port, PATH, encoded(request))
      expect(response.failedUsernames).toEqual([])
      expect(alice.frames).toHaveLength(1)
    }))
})

describe("grpc-message", () => {
  it("is the UTF-8 bytes of the text, those outside 0x20-0x7E and '%' percent-encoded", () => {
    const ascii = "request larger than 1024 bytes: see /a?b=c&d (x)"
    expect(percentEncode(ascii)).toBe(ascii)
    expect(percentEncode("100% done")).toBe("100%25 done")
    expect(percentEncode("naïve café")).toBe("na%C3%AFve caf%C3%A9")
    expect(percentEncode("go 🚀")).toBe("go %F0%9F%9A%80")
    expect(percentEncode("line\nnext\u007f")).toBe("line%0Anext%7F")
    // A lone surrogate is no UTF-8: it goes as U+FFFD instead of throwing, as encodeURI did.
    expect(() => encodeURI("a\uD800b")).toThrow()
    expect(percentEncode("a\uD800b")).toBe("a%EF%BF%BDb")
    expect(decodeURI(percentEncode("naïve 🚀 100%"))).toBe("naïve 🚀 100%")
  })

  it.scopedLive("non-ASCII details and a non-ASCII method name reach a grpc-js caller intact", () =>
    Effect.gen(function*() {
      const details = "refusé: 100% 🚀 \uD800"
      const { port } = yield* serveRoutes([
        { path: "/test.Echo/Refuse", handle: () => ({ code: grpc.status.FAILED_PRECONDITION, details }) }
      ])
      const refused = yield* Effect.flip(callWith(port, "/test.Echo/Refuse", Buffer.alloc(0)))
      expect(refused.code).toBe(grpc.status.FAILED_PRECONDITION)
      expect(refused.details).toBe("refusé: 100% 🚀 \uFFFD")
      // A Go or C-core caller puts the method's UTF-8 bytes in :path; Node writes a string's
      // characters as bytes, so the latin1 text of those bytes sends exactly them.
      const method = "/test.Echo/Méthode🚀"
      const unknown = yield* Effect.flip(callWith(port, Buffer.from(method, "utf8").toString("latin1"), Buffer.alloc(0)))
      expect(unknown.code).toBe(grpc.status.UNIMPLEMENTED)
      expect(unknown.details).toBe(`unknown method ${method}`)
    }))
})

describe("the unary server against callers that break the rules", () => {
  const ECHO = "/test.Echo/Echo"
  const hello = grpcFrame(Buffer.from("hello"))

  it.scopedLive("a connection has at most maxConcurrentStreams calls open; the extra ones are REFUSED_STREAM and other connections are served", () =>
    Effect.gen(function*() {
      const { port } = yield* serveRoutes([echoRoute(ECHO)], { maxConcurrentStreams: 4 })
      // Opened before the connection is up, all ten go out with the preface, before the
      // server's SETTINGS can have reached the client.
      const session = yield* rawSession(port)
      const calls = Array.from({ length: 10 }, () => rawRequest(session, ECHO))
      for (const call of calls) call.stream.write(hello.subarray(0, 3))
      const refused = yield* Effect.forEach(calls.slice(4), (call) => call.answer)
      expect(refused.map((answer) => answer.rstCode)).toEqual(Array(6).fill(Http2.constants.NGHTTP2_REFUSED_STREAM))
      expect(calls.slice(0, 4).map((call) => call.stream.closed)).toEqual([false, false, false, false])

      // Another connection is served meanwhile; then the four held calls complete normally.
      expect((yield* echoCall(port, "ping")).toString()).toBe("ping")
      for (const call of calls.slice(0, 4)) call.stream.end(hello.subarray(3))
      const served = yield* Effect.forEach(calls.slice(0, 4), (call) => call.answer)
      expect(served.map(rawStatusOf)).toEqual([0, 0, 0, 0])
      expect(served.map((answer) => answer.body.subarray(5).toString())).toEqual(Array(4).fill("hello"))
    }))

  it.scopedLive("a declared length over the limit is RESOURCE_EXHAUSTED on the prefix alone, even split, without waiting for the body", () =>
    Effect.gen(function*() {
      const { port } = yield* serveRoutes([echoRoute(ECHO)], { maxMessageBytes: 1024 * 1024 })
      const session = yield* rawSession(port)
      const whole = rawRequest(session, ECHO)
      whole.stream.write(grpcPrefix(5 * 1024 * 1024))
      const split = rawRequest(session, ECHO)
      const prefix = grpcPrefix(5 * 1024 * 1024)
      split.stream.write(prefix.subarray(0, 2), () => split.stream.write(prefix.subarray(2)))
      for (const call of [whole, split]) {
        const answer = yield* call.answer
        expect(rawStatusOf(answer)).toBe(grpc.status.RESOURCE_EXHAUSTED)
        expect(decodeURIComponent(String(answer.headers["grpc-message"]))).toBe("request larger than 1048576 bytes")
        expect(answer.body.byteLength).toBe(0)
      }
    }))

  it.scopedLive("an unknown grpc-encoding is refused only for a compressed message", () =>
    Effect.gen(function*() {
      const { port } = yield* serveRoutes([echoRoute(ECHO)])
      const session = yield* rawSession(port)
      const plain = rawRequest(session, ECHO, { "grpc-encoding": "snappy" })
      plain.stream.end(hello)
      const served = yield* plain.answer
      expect(rawStatusOf(served)).toBe(grpc.status.OK)
      expect(served.body.subarray(5).toString()).toBe("hello")

      const compressed = rawRequest(session, ECHO, { "grpc-encoding": "snappy" })
      // Refused on the prefix: the (made-up) compressed bytes never matter.
      compressed.stream.write(grpcPrefix(100, 1))
      const refused = yield* compressed.answer
      expect(rawStatusOf(refused)).toBe(grpc.status.UNIMPLEMENTED)
      expect(refused.headers["grpc-accept-encoding"]).toBe("identity,gzip,deflate")
    }))
})

describe("grpc-timeout", () => {
  const ECHO = "/test.Echo/Echo"
  const hello = grpcFrame(Buffer.from("hello"))

  it("reads 1 to 8 digits and a unit as milliseconds; anything else is malformed", () => {
    expect([parseGrpcTimeout("1H"), parseGrpcTimeout("2M"), parseGrpcTimeout("3S"), parseGrpcTimeout("4m")]).toEqual([
      3_600_000,
      120_000,
      3_000,
      4
    ])
    expect([parseGrpcTimeout("5000u"), parseGrpcTimeout("7000000n"), parseGrpcTimeout("99999999m"), parseGrpcTimeout("0m")]).toEqual([
      5,
      7,
      99_999_999,
      0
    ])
    for (const malformed of ["", "m", "1", "123456789m", "1s", "-1m", " 1m", "1.5S", "1m "]) {
      expect(parseGrpcTimeout(malformed)).toBe(-1)
    }
  })

  it.scopedLive("a request not complete by the caller's deadline is DEADLINE_EXCEEDED, then the stream is cancelled", () =>
    Effect.gen(function*() {
      const { port } = yield* serveRoutes([echoRoute(ECHO)])
      const session = yield* rawSession(port)
      const sent = performance.now()
      const late = rawRequest(session, ECHO, { "grpc-timeout": "200m" })
      late.stream.write(hello.subarray(0, 3))
      const answer = yield* late.answer
      expect(performance.now() - sent).toBeGreaterThanOrEqual(200)
      expect(rawStatusOf(answer)).toBe(grpc.status.DEADLINE_EXCEEDED)
      expect(decodeURIComponent(String(answer.headers["grpc-message"]))).toBe("deadline exceeded (grpc-timeout)")
      expect(answer.rstCode).toBe(Http2.constants.NGHTTP2_CANCEL)

      // Within its deadline, a request that arrives in pieces is served.
      const slow = rawRequest(session, ECHO, { "grpc-timeout": "5S" })
      slow.stream.write(hello.subarray(0, 3))
      yield* Effect.sleep("100 millis")
      slow.stream.end(hello.subarray(3))
      const served = yield* slow.answer
      expect(rawStatusOf(served)).toBe(grpc.status.OK)
      expect(served.body.subarray(5).toString()).toBe("hello")
    }))

  it.scopedLive("without a sooner grpc-timeout, a request must arrive within bodyTimeoutMs", () =>
    Effect.gen(function*() {
      const { port } = yield* serveRoutes([echoRoute(ECHO)], { bodyTimeoutMs: 300 })
      const session = yield* rawSession(port)
      const none = rawRequest(session, ECHO)
      const distant = rawRequest(session, ECHO, { "grpc-timeout": "1H" })
      for (const call of [none, distant]) call.stream.write(hello.subarray(0, 3))
      for (const call of [none, distant]) {
        const answer = yield* call.answer
        expect(rawStatusOf(answer)).toBe(grpc.status.DEADLINE_EXCEEDED)
        expect(decodeURIComponent(String(answer.headers["grpc-message"]))).toBe("request not complete within 300 ms")
      }
      // A grpc-js caller, whose message comes with its headers, is served as before.
      expect((yield* echoCall(port, "on time")).toString()).toBe("on time")
    }))

  it.scopedLive("a malformed grpc-timeout is INTERNAL on the headers, as grpc-go and grpc-js answer", () =>
    Effect.gen(function*() {
      const { port } = yield* serveRoutes([echoRoute(ECHO)])
      const session = yield* rawSession(port)
      const call = rawRequest(session, ECHO, { "grpc-timeout": "123456789m" })
      call.stream.write(hello.subarray(0, 3))
      const answer = yield* call.answer
      expect(rawStatusOf(answer)).toBe(grpc.status.INTERNAL)
      expect(decodeURIComponent(String(answer.headers["grpc-message"]))).toBe("malformed grpc-timeout 123456789m")
    }))
})

describe("request bodies held in memory", () => {
  const ECHO = "/test.Echo/Echo"
  const KiB = 1024
  // Each call declares 40 KiB and sends 30 KiB of it, then nothing: it holds 30 KiB + the prefix.
  const partial = Buffer.concat([grpcPrefix(40 * KiB), Buffer.alloc(30 * KiB, 7)])
  const held = partial.byteLength

  /** Opens `count` never-finishing calls on `session`; each is answered only if refused. */
  const openPartial = (session: Http2.ClientHttp2Session, count: number) =>
    Array.from({ length: count }, () => {
      const call = rawRequest(session, ECHO)
      call.stream.write(partial)
      let refused: number | undefined
      call.stream.once("response", (headers) => (refused = Number(headers["grpc-status"])))
      return { call, refused: () => refused }
    })

  it.scopedLive("stay within the connection's and the server's budgets, and are released by a connection that goes without ending its calls", () =>
    Effect.gen(function*() {
      const server = yield* serveRoutes([echoRoute(ECHO)], {
        maxMessageBytes: 64 * KiB,
        maxSessionBufferedBytes: 100 * KiB,
        maxBufferedBytes: 160 * KiB
      })
      const settled = (calls: ReadonlyArray<{ refused: () => number | undefined }>, bufferedElsewhere: number) =>
        eventually(Effect.suspend(() => {
          const refused = calls.filter((call) => call.refused() !== undefined).length
          // Every byte sent is either held by a call still open or was let go with its refusal.
          const open = (server.stats().bufferedBytes - bufferedElsewhere) / held
          return refused + open === calls.length ? Effect.succeed(refused) : Effect.fail("not yet")
        }))

      const first = yield* rawSession(server.port)
      const many = openPartial(first, 20)
      const refusedOnFirst = yield* settled(many, 0)
      // 100 KiB holds three calls of 30 KiB: the other seventeen were refused, none is held half.
      expect(refusedOnFirst).toBe(17)
      expect(server.stats().bufferedBytes).toBe(3 * held)
      expect(new Set(many.flatMap((call) => call.refused() ?? []))).toEqual(new Set([grpc.status.RESOURCE_EXHAUSTED]))

      // A second connection has a budget of its own, but the server's 160 KiB holds only five calls.
      const second = yield* rawSession(server.port)
      const more = openPartial(second, 5)
      expect(yield* settled(more, 3 * held)).toBe(3)
      expect(server.stats().bufferedBytes).toBe(5 * held)

      // A call reset by its caller lets its bytes go.
      const open = more.find((call) => call.refused() === undefined)!
      open.call.stream.close(Http2.constants.NGHTTP2_CANCEL)
      yield* eventually(Effect.suspend(() => server.stats().bufferedBytes === 4 * held ? Effect.void : Effect.fail("not yet")))

      // Gone without ending its calls (no 'end' on them, only 'close'): its bytes are released.
      first.destroy()
      yield* eventually(Effect.suspend(() => server.stats().bufferedBytes === held ? Effect.void : Effect.fail("not yet")))
      second.destroy()
      yield* eventually(Effect.suspend(() => server.stats().bufferedBytes === 0 ? Effect.void : Effect.fail("not yet")))
      expect(server.stats().waitingCalls).toBe(0)
      expect((yield* echoCall(server.port, "still serving")).toString()).toBe("still serving")
    }))
})

describe("responses a caller leaves unread", () => {
  const BIG = "/test.Big/Get"
  const KiB = 1024
  // Each answer is 256 KiB, whatever the request.
  const bigRoute = { path: BIG, handle: () => ({ response: new Uint8Array(256 * KiB) }) }

  it.scopedLive("a caller that stops reading is cut off once over its output budget for the grace period, and what it held is released", () =>
    Effect.gen(function*() {
      const cut: Array<string> = []
      const server = yield* serveRoutes([bigRoute], { outputGraceMs: 200, onCutOff: (_address, reason) => cut.push(reason) })
      const socket = yield* tcpConnection(server.port)
      // Windows opened wide, so flow control holds nothing back: only the unread socket does.
      const calls = Array.from({ length: 60 }, (_, i) =>
        Buffer.concat([h2.headers(2 * i + 1, h2.grpcRequest(BIG)), h2.data(2 * i + 1, grpcFrame(Buffer.alloc(1)), true)]))
      socket.pause()
      socket.write(Buffer.concat([
        h2.preface,
        h2.settings([[0x4, 2 ** 31 - 1]]),
        h2.windowUpdate(0, 2 ** 31 - 1 - 65_535),
        ...calls
      ]))
      // 15 MiB of answers: more than the kernel's buffers take, so over 1 MiB stays unsent.
      yield* eventually(Effect.suspend(() => server.stats().unsentBytes > 1024 * KiB ? Effect.void : Effect.fail("not yet")))
      yield* eventually(Effect.suspend(() => server.stats().connections === 0 ? Effect.void : Effect.fail("not yet")))
      expect(cut).toEqual(["output"])
      expect(server.stats().unsentBytes).toBe(0)
      // The socket was closed on it.
      socket.resume()
      yield* Effect.async<void>((resume) => {
        if (socket.destroyed) return resume(Effect.void)
        socket.once("close", () => resume(Effect.void))
      })
    }))

  it.scopedLive("a caller reading a burst of large answers is not cut off", () =>
    Effect.gen(function*() {
      const cut: Array<string> = []
      const server = yield* serveRoutes([bigRoute], { onCutOff: (_address, reason) => cut.push(reason) })
      const client = new grpc.Client(`127.0.0.1:${server.port}`, grpc.credentials.createInsecure())
      yield* Effect.addFinalizer(() => Effect.sync(() => client.close()))
      // 30 answers of 256 KiB in flight at once: 7.5 MiB, far over the 1 MiB budget for a moment.
      const sizes = yield* Effect.forEach(
        Array.from({ length: 30 }, () => undefined),
        () =>
          Effect.async<number, grpc.ServiceError>((resume) => {
            client.makeUnaryRequest(BIG, (value: Buffer) => value, (buffer: Buffer) => buffer, Buffer.alloc(1), (error, value) =>
              resume(error ? Effect.fail(error) : Effect.succeed(value!.byteLength)))
          }),
        { concurrency: "unbounded" }
      )
      expect(sizes).toEqual(Array(30).fill(256 * KiB))
      expect(cut).toEqual([])
      expect(server.stats().connections).toBe(1)
    }))
})

describe("calls refused on their headers", () => {
  const ECHO = "/test.Echo/Echo"

  it.scopedLive("past the rate per address, the connection gets GOAWAY ENHANCE_YOUR_CALM and is closed; good calls are not counted", () =>
    Effect.gen(function*() {
      const cut: Array<string> = []
      const server = yield* serveRoutes([echoRoute(ECHO)], {
        refusals: { ratePerSecond: 1, burst: 5 },
        onCutOff: (_address, reason) => cut.push(reason)
      })
      const session = yield* rawSession(server.port)
      const goaway = Effect.runPromise(Effect.async<number>((resume) => {
        session.once("goaway", (code) => resume(Effect.succeed(code)))
      }))
      const closed = new Promise<void>((resolve) => session.once("close", resolve))
      const good = rawRequest(session, ECHO)
      good.stream.end(grpcFrame(Buffer.from("fine")))
      expect(rawStatusOf(yield* good.answer)).toBe(grpc.status.OK)
      // Five refusals of each kind the burst allows, all answered; the sixth cuts the connection.
      const refused = [
        rawRequest(session, "/test.Echo/Nope"),
        rawRequest(session, ECHO, { "content-type": "application/json" }),
        rawRequest(session, ECHO, { ":method": "PUT" }),
        rawRequest(session, ECHO, { "grpc-timeout": "soon" }),
        rawRequest(session, "/test.Echo/Nope")
      ]
      const answers = yield* Effect.forEach(refused, (call) => call.answer)
      expect(answers.map((answer) => answer.headers[":status"])).toEqual([200, 415, 405, 200, 200])
      const oneTooMany = rawRequest(session, "/test.Echo/Nope")
      expect((yield* oneTooMany.answer).headers[":status"]).toBeUndefined()
      expect(yield* Effect.promise(() => goaway)).toBe(Http2.constants.NGHTTP2_ENHANCE_YOUR_CALM)
      yield* Effect.promise(() => closed)
      expect(cut).toEqual(["refusals"])

      // The count is the address's: a new connection from it is served, but cut on its first refusal.
      const again = yield* rawSession(server.port)
      const served = rawRequest(again, ECHO)
      served.stream.end(grpcFrame(Buffer.from("fine")))
      expect(rawStatusOf(yield* served.answer)).toBe(grpc.status.OK)
      const refusedAgain = rawRequest(again, "/test.Echo/Nope")
      expect((yield* refusedAgain.answer).headers[":status"]).toBeUndefined()
      expect(cut).toEqual(["refusals", "refusals"])
      yield* eventually(Effect.suspend(() => server.stats().connections === 0 ? Effect.void : Effect.fail("not yet")))
    }))
})

/** A length-prefixed frame whose compressed flag is set. */
const grpcFrameCompressed = (payload: Buffer): Buffer => {
  const frame = grpcFrame(payload)
  frame[0] = 1
  return frame
}
