import { describe, expect, it } from "@effect/vitest"
import { InMemorySpanExporter } from "@opentelemetry/sdk-trace-base"
import { Effect, Layer, Option } from "effect"
import * as Http from "node:http"
import type { AddressInfo } from "node:net"
import { currentTraceHeaders, parentSpanFromTraceparent } from "../../src/adapters/platform/tracing/TraceContext.js"
import { layer as layerTracing, layerTest as layerTracingTest, otlpGrpcUrl, otlpTracesUrl, traceProtocolFor } from "../../src/adapters/obs/Tracing.js"
import * as grpc from "@grpc/grpc-js"

/** What a server does with an incoming traceparent: runs its handler as a continuation of that trace. */
const withTraceparent = (header: string | undefined) =>
<A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> => {
  const parent = parentSpanFromTraceparent(header)
  return Option.isSome(parent) ? Effect.withParentSpan(effect, parent.value) : effect
}

const finished = (exporter: InMemorySpanExporter, name: string) => {
  const span = exporter.getFinishedSpans().find((s) => s.name === name)
  expect(span, `span ${name}`).toBeDefined()
  return span!
}

describe("Tracing", () => {
  it.effect("a child span is exported with its parent's id", () => {
    const exporter = new InMemorySpanExporter()
    return Effect.gen(function*() {
      yield* Effect.void.pipe(Effect.withSpan("child"), Effect.withSpan("parent"))
      const parent = finished(exporter, "parent")
      const child = finished(exporter, "child")
      expect(child.spanContext().traceId).toBe(parent.spanContext().traceId)
      expect(child.parentSpanContext?.spanId).toBe(parent.spanContext().spanId)
      expect(parent.parentSpanContext).toBeUndefined()
      expect(parent.resource.attributes["service.name"]).toBe("resonance-gateway-test")
    }).pipe(Effect.provide(layerTracingTest(exporter)))
  })

  it.effect("traceparent written by currentTraceHeaders reads back as the same trace and span", () => {
    const exporter = new InMemorySpanExporter()
    return Effect.gen(function*() {
      const { headers, span } = yield* Effect.all({ headers: currentTraceHeaders, span: Effect.currentSpan }).pipe(
        Effect.withSpan("client-call"),
        Effect.provide(layerTracingTest(exporter))
      )
      expect(headers.traceparent).toBe(`00-${span.traceId}-${span.spanId}-01`)
      const parent = parentSpanFromTraceparent(headers.traceparent)
      expect(Option.isSome(parent)).toBe(true)
      const value = Option.getOrThrow(parent)
      expect(value.traceId).toBe(span.traceId)
      expect(value.spanId).toBe(span.spanId)
      expect(value.sampled).toBe(true)
    })
  })

  it.effect("currentTraceHeaders is empty outside any span", () =>
    Effect.gen(function*() {
      expect(yield* currentTraceHeaders).toEqual({})
    }))

  it.effect("a handler run under an incoming traceparent continues that trace", () => {
    const exporter = new InMemorySpanExporter()
    const traceId = "4bf92f3577b34da6a3ce929d0e0e4736"
    const remoteSpanId = "00f067aa0ba902b7"
    return Effect.gen(function*() {
      yield* Effect.void.pipe(
        Effect.withSpan("PushService.Push", { kind: "server" }),
        withTraceparent(`00-${traceId}-${remoteSpanId}-01`)
      )
      const server = finished(exporter, "PushService.Push")
      expect(server.spanContext().traceId).toBe(traceId)
      expect(server.parentSpanContext?.spanId).toBe(remoteSpanId)
      expect(server.parentSpanContext?.isRemote).toBe(true)
    }).pipe(Effect.provide(layerTracingTest(exporter)))
  })

  it.effect("an unsampled remote parent keeps its children unsampled", () => {
    const exporter = new InMemorySpanExporter()
    return Effect.gen(function*() {
      yield* Effect.void.pipe(
        Effect.withSpan("sampled-out"),
        withTraceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00")
      )
      yield* Effect.void.pipe(Effect.withSpan("fresh-root"))
      const names = exporter.getFinishedSpans().map((s) => s.name)
      expect(names).toEqual(["fresh-root"])
    }).pipe(Effect.provide(layerTracingTest(exporter)))
  })

  it("rejects malformed traceparent headers", () => {
    const bad = [
      undefined,
      "",
      "garbage",
      "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
      "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
      "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
      "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
      "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
      "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
      "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-zz"
    ]
    for (const header of bad) {
      expect(Option.isNone(parentSpanFromTraceparent(header)), String(header)).toBe(true)
    }
    const future = parentSpanFromTraceparent("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-more")
    expect(Option.map(future, (s) => [s.traceId, s.spanId, s.sampled])).toEqual(
      Option.some(["4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7", false])
    )
  })

  it("normalizes the OTLP endpoint", () => {
    expect(otlpTracesUrl("")).toBeUndefined()
    expect(otlpTracesUrl("localhost:4318")).toBe("http://localhost:4318/v1/traces")
    expect(otlpTracesUrl("http://collector:4318")).toBe("http://collector:4318/v1/traces")
    expect(otlpTracesUrl("https://collector/custom/traces")).toBe("https://collector/custom/traces")
  })

  it("picks OTLP/gRPC for upstream's localhost:4317 and OTLP/HTTP otherwise, unless told", () => {
    expect(traceProtocolFor("localhost:4317")).toBe("grpc")
    expect(traceProtocolFor("otel-collector:4317")).toBe("grpc")
    expect(traceProtocolFor("grpc://collector:9000")).toBe("grpc")
    expect(traceProtocolFor("localhost:4318")).toBe("http")
    expect(traceProtocolFor("http://collector:4318/v1/traces")).toBe("http")
    expect(traceProtocolFor("localhost:4317", "http")).toBe("http")
    expect(traceProtocolFor("localhost:9999", "grpc")).toBe("grpc")
    expect(otlpGrpcUrl("localhost:4317", true)).toBe("http://localhost:4317")
    expect(otlpGrpcUrl("collector:4317", false)).toBe("https://collector:4317")
    expect(otlpGrpcUrl("grpc://collector:4317", true)).toBe("http://collector:4317")
  })

  it.scopedLive("the gRPC exporter delivers spans to an OTLP/gRPC collector", () =>
    Effect.gen(function*() {
      const received: Array<Buffer> = []
      const port = yield* Effect.acquireRelease(
        Effect.async<{ server: grpc.Server; port: number }>((resume) => {
          const server = new grpc.Server()
          const raw = (b: Buffer) => b
          server.addService({
            Export: {
              path: "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
              requestStream: false,
              responseStream: false,
              requestSerialize: raw,
              requestDeserialize: raw,
              responseSerialize: raw,
              responseDeserialize: raw
            }
          }, {
            Export: (call: grpc.ServerUnaryCall<Buffer, Buffer>, callback: grpc.sendUnaryData<Buffer>) => {
              received.push(call.request)
              callback(null, Buffer.alloc(0))
            }
          })
          server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (error, port) =>
            resume(error ? Effect.die(error) : Effect.succeed({ server, port })))
        }),
        ({ server }) => Effect.sync(() => server.forceShutdown())
      ).pipe(Effect.map(({ port }) => port))
      yield* Effect.void.pipe(
        Effect.withSpan("exported-over-grpc"),
        Effect.provide(layerTracing({
          enabled: true,
          endpoint: `127.0.0.1:${port}`,
          protocol: "grpc",
          insecure: true,
          samplerRatio: 1,
          serviceName: "resonance-gateway",
          serviceVersion: "0.1.0"
        }))
      )
      expect(received.length).toBe(1)
      expect(received[0]!.toString("latin1")).toContain("exported-over-grpc")
    }))

  it("the disabled layer is the empty layer", () => {
    const disabled = layerTracing({ enabled: false, endpoint: "x:1", samplerRatio: 1, serviceName: "x", serviceVersion: "0" })
    expect(disabled).toBe(Layer.empty)
  })

  it.scopedLive("the enabled layer exports over OTLP/HTTP, honouring the sampler ratio", () =>
    Effect.gen(function*() {
      const received: Array<{ path: string | undefined; body: string }> = []
      const collector = yield* Effect.acquireRelease(
        Effect.async<Http.Server>((resume) => {
          const server = Http.createServer((req, res) => {
            const chunks: Array<Buffer> = []
            req.on("data", (chunk: Buffer) => chunks.push(chunk))
            req.on("end", () => {
              received.push({ path: req.url, body: Buffer.concat(chunks).toString("latin1") })
              res.writeHead(200, { "content-type": "application/json" }).end("{}")
            })
          })
          server.listen(0, "127.0.0.1", () => resume(Effect.succeed(server)))
        }),
        (server) =>
          Effect.async<void>((resume) => {
            server.close(() => resume(Effect.void))
            server.closeAllConnections()
          })
      )
      const endpoint = `127.0.0.1:${(collector.address() as AddressInfo).port}`
      const options = { enabled: true, endpoint, serviceName: "resonance-gateway", serviceVersion: "0.1.0" }

      // Release of the layer flushes the batch processor, so the export has happened once provide returns.
      yield* Effect.void.pipe(
        Effect.withSpan("never-sampled"),
        Effect.provide(layerTracing({ ...options, samplerRatio: 0 }))
      )
      expect(received).toEqual([])

      yield* Effect.void.pipe(
        Effect.withSpan("exported-span"),
        Effect.provide(layerTracing({ ...options, samplerRatio: 1 }))
      )
      expect(received.length).toBe(1)
      expect(received[0]!.path).toBe("/v1/traces")
      expect(received[0]!.body).toContain("exported-span")
      expect(received[0]!.body).toContain("resonance-gateway")
    }))
})
