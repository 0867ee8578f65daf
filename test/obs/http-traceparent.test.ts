import { describe, expect, it } from "@effect/vitest"
import { InMemorySpanExporter } from "@opentelemetry/sdk-trace-base"
import { Effect } from "effect"
import { layerTest as layerTracingTest } from "../../src/adapters/obs/Tracing.js"
import { call, serve } from "../http/harness.js"

const traceId = "4bf92f3577b34da6a3ce929d0e0e4736"
const remoteSpanId = "00f067aa0ba902b7"

/** The HTTP API reads `traceparent` with the parser the gRPC servers use, sampled flag included. */
describe("traceparent on the HTTP API", () => {
  it.scopedLive("a sampled parent (-01) is continued: the request span joins its trace, under the remote span", () => {
    const exporter = new InMemorySpanExporter()
    return Effect.gen(function*() {
      const { url } = yield* serve()
      const response = yield* call(url + "/healthz", { headers: { traceparent: `00-${traceId}-${remoteSpanId}-01` } })
      expect(response.status).toBe(200)
      const spans = exporter.getFinishedSpans().filter((span) => span.name === "HTTP /healthz")
      expect(spans).toHaveLength(1)
      const [span] = spans
      expect(span!.spanContext().traceId).toBe(traceId)
      expect(span!.parentSpanContext?.spanId).toBe(remoteSpanId)
      expect(span!.parentSpanContext?.isRemote).toBe(true)
      expect(span!.attributes["http.response.status_code"]).toBe(200)
    }).pipe(Effect.provide(layerTracingTest(exporter)))
  })

  it.scopedLive("an unsampled parent (-00) stays unsampled: its request span is not exported, while an untraced request's is", () => {
    const exporter = new InMemorySpanExporter()
    return Effect.gen(function*() {
      const { url } = yield* serve()
      const sampledOut = yield* call(url + "/api/v1/session/list", {
        headers: { traceparent: `00-${traceId}-${remoteSpanId}-00`, authorization: "Bearer token-alice" }
      })
      expect(sampledOut.status).toBe(200)
      const fresh = yield* call(url + "/healthz")
      expect(fresh.status).toBe(200)
      const spans = exporter.getFinishedSpans()
      expect(spans.map((span) => span.name)).toEqual(["HTTP /healthz"])
      expect(spans[0]!.spanContext().traceId).not.toBe(traceId)
      expect(spans[0]!.parentSpanContext).toBeUndefined()
    }).pipe(Effect.provide(layerTracingTest(exporter)))
  })

  it.scopedLive("a malformed traceparent starts a new trace", () => {
    const exporter = new InMemorySpanExporter()
    return Effect.gen(function*() {
      const { url } = yield* serve()
      yield* call(url + "/healthz", { headers: { traceparent: `00-${traceId}-${remoteSpanId}-zz` } })
      const spans = exporter.getFinishedSpans()
      expect(spans.map((span) => span.name)).toEqual(["HTTP /healthz"])
      expect(spans[0]!.spanContext().traceId).not.toBe(traceId)
    }).pipe(Effect.provide(layerTracingTest(exporter)))
  })
})
