import { describe, expect, it } from "@effect/vitest"
import { ConfigProvider, Effect, Exit, Layer } from "effect"
import * as Http from "node:http"
import type { AddressInfo } from "node:net"
import { Registry } from "prom-client"
import { Metrics } from "../../src/application/ports/Metrics.js"
import * as FrontDoor from "../../src/adapters/platform/net/FrontDoor.js"
import {
  layer as layerPrometheus,
  metricsSettings,
  makePrometheusMetrics,
  MetricsEndpoint,
  MetricsServerError
} from "../../src/adapters/obs/PrometheusMetrics.js"

interface Exposition {
  readonly types: Map<string, string>
  /** `name{a="1",b="2"}` (labels in exposition order) → value */
  readonly samples: Map<string, number>
}

const parseExposition = (text: string): Exposition => {
  const types = new Map<string, string>()
  const samples = new Map<string, number>()
  for (const line of text.split("\n")) {
    if (line.startsWith("# TYPE ")) {
      const [name, type] = line.slice("# TYPE ".length).split(" ")
      types.set(name!, type!)
    } else if (line !== "" && !line.startsWith("#")) {
      const space = line.lastIndexOf(" ")
      samples.set(line.slice(0, space), Number(line.slice(space + 1)))
    }
  }
  return { types, samples }
}

const scrape = (url: string) =>
  Effect.promise(async () => {
    const response = await fetch(url)
    return { status: response.status, contentType: response.headers.get("content-type"), body: await response.text() }
  })

const testLayer = layerPrometheus({ port: 0, host: "127.0.0.1", path: "/metrics" }).pipe(Layer.provide(FrontDoor.layerTest()))

const metricsUrl = Effect.map(MetricsEndpoint, (e) => `http://127.0.0.1:${e.port}${e.path}`)

const expectedTypes: ReadonlyArray<readonly [string, string]> = [
  ["gateway_websocket_connections_active", "gauge"],
  ["gateway_websocket_connections_total", "counter"],
  ["gateway_messages_pulse_total", "counter"],
  ["gateway_messages_received_total", "counter"],
  ["gateway_messages_sent_total", "counter"],
  ["gateway_push_failed_total", "counter"],
  ["gateway_http_requests_total", "counter"],
  ["gateway_http_errors_total", "counter"],
  ["gateway_grpc_requests_total", "counter"],
  ["gateway_grpc_errors_total", "counter"],
  ["gateway_push_duration_seconds", "histogram"],
  ["gateway_http_request_duration_seconds", "histogram"],
  ["gateway_grpc_request_duration_seconds", "histogram"]
]

describe("PrometheusMetrics", () => {
  it.scopedLive("exposes the 13 gateway metrics with their types, the rejection counter and process metrics", () =>
    Effect.gen(function*() {
      const url = yield* metricsUrl
      const { status, body } = yield* scrape(url)
      expect(status).toBe(200)
      const { types } = parseExposition(body)
      for (const [name, type] of expectedTypes) {
        expect(types.get(name), name).toBe(type)
      }
      expect(types.get("gateway_websocket_connections_rejected_total")).toBe("counter")
      expect(types.get("gateway_logic_wal_flush_duration_seconds")).toBe("histogram")
      expect(types.get("gateway_logic_wal_checkpoint_duration_seconds")).toBe("histogram")
      expect(types.get("process_cpu_user_seconds_total")).toBe("counter")
      expect(types.get("nodejs_heap_size_used_bytes")).toBe("gauge")
    }).pipe(Effect.provide(testLayer)))

  it.scopedLive("by default the scrape endpoint listens on loopback only, and shows the front door's connections", () =>
    Effect.gen(function*() {
      const settings = yield* Effect.withConfigProvider(metricsSettings, ConfigProvider.fromJson({}))
      expect(settings.host).toBe("127.0.0.1")
      const endpoint = yield* MetricsEndpoint
      expect(endpoint.host).toBe("127.0.0.1")
      const { body } = yield* scrape(`http://127.0.0.1:${endpoint.port}${endpoint.path}`)
      const { samples, types } = parseExposition(body)
      expect(types.get("gateway_frontdoor_closed_total")).toBe("counter")
      // The scrape itself holds a connection of the metrics listener.
      expect(samples.get('gateway_frontdoor_connections{listener="metrics"}')).toBeGreaterThanOrEqual(1)
      expect(samples.get("gateway_frontdoor_budget")).toBe(19_000)
    }).pipe(Effect.provide(layerPrometheus({ port: 0, path: "/metrics" }).pipe(Layer.provide(FrontDoor.layerTest())))))

  it.scopedLive("values move with each metric call", () =>
    Effect.gen(function*() {
      const metrics = yield* Metrics
      metrics.connectionOpened()
      metrics.connectionOpened()
      metrics.connectionClosed()
      metrics.connectionRejected("unauthenticated")
      metrics.connectionRejected("unauthenticated")
      metrics.connectionRejected("draining")
      metrics.pulse()
      metrics.messageReceived()
      metrics.messageReceived()
      metrics.messageReceived()
      metrics.messagesSent(5)
      metrics.messagesSent(2)
      metrics.pushFailed(2)
      metrics.pushDuration(0.002)
      metrics.pushDuration(0.004)
      metrics.httpRequest("/x", 500, 0.1)
      metrics.httpRequest("/x", 200, 0.05)
      metrics.httpRequest("/x", 200, 0.05)
      metrics.httpRequest("/y", 404, 0.01)
      metrics.grpcRequest("/resonance.gateway.v1.PushService/Push", "OK", 0.01)
      metrics.grpcRequest("/resonance.gateway.v1.PushService/Push", "UNAVAILABLE", 0.02)

      const { samples } = parseExposition((yield* scrape(yield* metricsUrl)).body)
      expect(samples.get("gateway_websocket_connections_active")).toBe(1)
      expect(samples.get("gateway_websocket_connections_total")).toBe(2)
      expect(samples.get("gateway_websocket_connections_rejected_total{reason=\"unauthenticated\"}")).toBe(2)
      expect(samples.get("gateway_websocket_connections_rejected_total{reason=\"draining\"}")).toBe(1)
      expect(samples.get("gateway_messages_pulse_total")).toBe(1)
      expect(samples.get("gateway_messages_received_total")).toBe(3)
      expect(samples.get("gateway_messages_sent_total")).toBe(7)
      expect(samples.get("gateway_push_failed_total")).toBe(2)
      expect(samples.get("gateway_push_duration_seconds_count")).toBe(2)
      expect(samples.get("gateway_push_duration_seconds_sum")).toBeCloseTo(0.006, 9)

      expect(samples.get("gateway_http_requests_total{route=\"/x\",code=\"500\"}")).toBe(1)
      expect(samples.get("gateway_http_requests_total{route=\"/x\",code=\"200\"}")).toBe(2)
      expect(samples.get("gateway_http_requests_total{route=\"/y\",code=\"404\"}")).toBe(1)
      expect(samples.get("gateway_http_errors_total{route=\"/x\",code=\"500\"}")).toBe(1)
      expect(samples.get("gateway_http_errors_total{route=\"/y\",code=\"404\"}")).toBe(1)
      expect(samples.has("gateway_http_errors_total{route=\"/x\",code=\"200\"}")).toBe(false)
      expect(samples.get("gateway_http_request_duration_seconds_count{route=\"/x\"}")).toBe(3)
      expect(samples.get("gateway_http_request_duration_seconds_sum{route=\"/x\"}")).toBeCloseTo(0.2, 9)
      expect(samples.get("gateway_http_request_duration_seconds_bucket{le=\"0.05\",route=\"/x\"}")).toBe(2)
      expect(samples.get("gateway_http_request_duration_seconds_count{route=\"/y\"}")).toBe(1)

      const push = "/resonance.gateway.v1.PushService/Push"
      expect(samples.get(`gateway_grpc_requests_total{method="${push}",code="OK"}`)).toBe(1)
      expect(samples.get(`gateway_grpc_requests_total{method="${push}",code="UNAVAILABLE"}`)).toBe(1)
      expect(samples.get(`gateway_grpc_errors_total{method="${push}",code="UNAVAILABLE"}`)).toBe(1)
      expect(samples.has(`gateway_grpc_errors_total{method="${push}",code="OK"}`)).toBe(false)
      expect(samples.get(`gateway_grpc_request_duration_seconds_count{method="${push}"}`)).toBe(2)
    }).pipe(Effect.provide(testLayer)))

  it.effect("nonsense values are ignored instead of throwing on the hot path", () =>
    Effect.promise(async () => {
      const { close, metrics, registry } = makePrometheusMetrics(new Registry())
      metrics.messagesSent(-1)
      metrics.messagesSent(Number.NaN)
      metrics.pushFailed(-3)
      metrics.pushFailed(Infinity)
      metrics.pushDuration(Number.NaN)
      metrics.httpRequest("/x", 200, Number.POSITIVE_INFINITY)
      metrics.grpcRequest("/m", "OK", Number.NaN)
      const { samples } = parseExposition(await registry.metrics())
      expect(samples.get("gateway_messages_sent_total")).toBe(0)
      expect(samples.get("gateway_push_failed_total")).toBe(0)
      expect(samples.get("gateway_push_duration_seconds_count")).toBe(0)
      expect(samples.get("gateway_http_requests_total{route=\"/x\",code=\"200\"}")).toBe(1)
      expect(samples.has("gateway_http_request_duration_seconds_count{route=\"/x\"}")).toBe(false)
      expect(samples.has("gateway_grpc_request_duration_seconds_count{method=\"/m\"}")).toBe(false)
      close()
    }))

  it.effect("a scrape walks no handles: open fds come from a cached reading, active handles are not exported", () =>
    Effect.promise(async () => {
      const { registry, close } = makePrometheusMetrics(new Registry())
      try {
        await new Promise((resolve) => setTimeout(resolve, 50))
        const { samples } = parseExposition(await registry.metrics())
        expect([...samples.keys()].some((k) => k.startsWith("nodejs_active_handles"))).toBe(false)
        expect([...samples.keys()].some((k) => k.startsWith("nodejs_active_resources"))).toBe(false)
        if (process.platform === "linux") expect(samples.get("process_open_fds")).toBeGreaterThan(2)
      } finally {
        close()
      }
    }))

  it.effect("each instance has its own registry, so several can coexist", () =>
    Effect.promise(async () => {
      const a = makePrometheusMetrics(new Registry())
      const b = makePrometheusMetrics(new Registry())
      a.metrics.pulse()
      expect(parseExposition(await a.registry.metrics()).samples.get("gateway_messages_pulse_total")).toBe(1)
      expect(parseExposition(await b.registry.metrics()).samples.get("gateway_messages_pulse_total")).toBe(0)
      a.close()
      b.close()
    }))

  it.scopedLive("serves the registry's content type at the path and 404 elsewhere", () =>
    Effect.gen(function*() {
      const endpoint = yield* MetricsEndpoint
      const base = `http://127.0.0.1:${endpoint.port}`
      const ok = yield* scrape(`${base}/metrics?x=1`)
      expect(ok.status).toBe(200)
      expect(ok.contentType).toBe(endpoint.registry.contentType)
      const other = yield* scrape(`${base}/`)
      expect(other.status).toBe(404)
      const near = yield* scrape(`${base}/metrics/extra`)
      expect(near.status).toBe(404)
    }).pipe(Effect.provide(testLayer)))

  it.live("closes the server when the layer is released", () =>
    Effect.gen(function*() {
      const port = yield* Effect.gen(function*() {
        const endpoint = yield* MetricsEndpoint
        expect((yield* scrape(`http://127.0.0.1:${endpoint.port}/metrics`)).status).toBe(200)
        return endpoint.port
      }).pipe(Effect.provide(testLayer))
      const after = yield* Effect.tryPromise(() => fetch(`http://127.0.0.1:${port}/metrics`)).pipe(Effect.exit)
      expect(Exit.isFailure(after)).toBe(true)
    }))

  it.scopedLive("fails with MetricsServerError when the port is taken", () =>
    Effect.gen(function*() {
      const blocker = yield* Effect.acquireRelease(
        Effect.async<Http.Server>((resume) => {
          const server = Http.createServer()
          server.listen(0, "127.0.0.1", () => resume(Effect.succeed(server)))
        }),
        (server) =>
          Effect.async<void>((resume) => {
            server.close(() => resume(Effect.void))
          })
      )
      const port = (blocker.address() as AddressInfo).port
      const error = yield* Layer.build(layerPrometheus({ port, host: "127.0.0.1", path: "/metrics" }).pipe(Layer.provide(FrontDoor.layerTest()))).pipe(Effect.flip)
      expect(error).toBeInstanceOf(MetricsServerError)
      expect(error.reason).toBe("Listen")
    }))
})
