import * as NodeSdk from "@effect/opentelemetry/NodeSdk"
import { OtelTraceFlags } from "@effect/opentelemetry/Tracer"
import { OTLPTraceExporter } from "@opentelemetry/exporter-trace-otlp-http"
import {
  BatchSpanProcessor,
  type InMemorySpanExporter,
  ParentBasedSampler,
  SimpleSpanProcessor,
  TraceIdRatioBasedSampler
} from "@opentelemetry/sdk-trace-base"
import { Context, Effect, Layer, Option, Tracer } from "effect"

export interface TracingOptions {
  readonly enabled: boolean
  /** OTLP/HTTP traces URL; `host:port` alone means `http://host:port/v1/traces`. */
  readonly endpoint: string
  readonly samplerRatio: number
  readonly serviceName: string
  readonly serviceVersion: string
}

/**
 * Exports Effect spans over OTLP/HTTP in batches. Root spans are sampled at `samplerRatio`;
 * a span with a remote parent follows the parent's sampled flag. Nothing at all when disabled.
 */
export const layerTracing = (options: TracingOptions): Layer.Layer<never> =>
  options.enabled
    ? NodeSdk.layer(() => ({
      spanProcessor: new BatchSpanProcessor(new OTLPTraceExporter({ url: otlpTracesUrl(options.endpoint) })),
      tracerConfig: {
        sampler: new ParentBasedSampler({ root: new TraceIdRatioBasedSampler(options.samplerRatio) })
      },
      resource: { serviceName: options.serviceName, serviceVersion: options.serviceVersion }
    }))
    : Layer.empty

/** Every span is exported synchronously to `exporter`, for tests. */
export const layerTracingTest = (exporter: InMemorySpanExporter): Layer.Layer<never> =>
  NodeSdk.layer(() => ({
    spanProcessor: new SimpleSpanProcessor(exporter),
    resource: { serviceName: "resonance-gateway-test" }
  }))

/** Accepts a full URL, a URL without path, or the bare `host:port` Go exporters take. */
export const otlpTracesUrl = (endpoint: string): string | undefined => {
  const trimmed = endpoint.trim()
  if (trimmed === "") return undefined
  const withScheme = trimmed.includes("://") ? trimmed : `http://${trimmed}`
  try {
    const url = new URL(withScheme)
    if (url.pathname === "" || url.pathname === "/") url.pathname = "/v1/traces"
    return url.toString()
  } catch {
    return withScheme
  }
}

/** The W3C `traceparent` value for a span: `00-<traceId>-<spanId>-<flags>`. */
export const formatTraceparent = (span: Tracer.AnySpan): string =>
  `00-${span.traceId}-${span.spanId}-${span.sampled ? "01" : "00"}`

/** Metadata to attach to an outgoing call so the callee continues the current trace; empty outside a span. */
export const currentTraceHeaders: Effect.Effect<Record<string, string>> = Effect.map(
  Effect.serviceOption(Tracer.ParentSpan),
  (current): Record<string, string> => {
    const span = Option.flatMap(current, propagated)
    return Option.isSome(span) ? { traceparent: formatTraceparent(span.value) } : {}
  }
)

const hex32 = /^[0-9a-f]{32}$/
const hex16 = /^[0-9a-f]{16}$/
const hex2 = /^[0-9a-f]{2}$/

/**
 * Reads an incoming W3C `traceparent`; `None` when absent or malformed, so the handler starts a new trace.
 * Run the handler under `Effect.withParentSpan(span)` (or `withTraceparent`).
 */
export const parentSpanFromTraceparent = (header: string | undefined): Option.Option<Tracer.ExternalSpan> => {
  if (header === undefined) return Option.none()
  const parts = header.trim().toLowerCase().split("-")
  if (parts.length < 4) return Option.none()
  const [version, traceId, spanId, flagsHex] = parts as [string, string, string, string]
  // Version 00 has exactly four fields; later versions may append more.
  if (!hex2.test(version) || version === "ff" || (version === "00" && parts.length !== 4)) return Option.none()
  if (!hex32.test(traceId) || !hex16.test(spanId) || !hex2.test(flagsHex)) return Option.none()
  if (/^0+$/.test(traceId) || /^0+$/.test(spanId)) return Option.none()
  const traceFlags = parseInt(flagsHex, 16)
  return Option.some(Tracer.externalSpan({
    traceId,
    spanId,
    sampled: (traceFlags & 1) === 1,
    // Without the flags in context the OTel bridge would treat every remote parent as sampled.
    context: Context.make(OtelTraceFlags, traceFlags)
  }))
}

/** Runs `effect` as a continuation of the trace named by `header`, if it names one. */
export const withTraceparent = (header: string | undefined) =>
<A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> => {
  const parent = parentSpanFromTraceparent(header)
  return Option.isSome(parent) ? Effect.withParentSpan(effect, parent.value) : effect
}

// Same rule as Effect's own propagation: a span marked DisablePropagation defers to its nearest ancestor.
const propagated = (span: Tracer.AnySpan): Option.Option<Tracer.AnySpan> =>
  Context.get(span.context, Tracer.DisablePropagation)
    ? span._tag === "Span" ? Option.flatMap(span.parent, propagated) : Option.none()
    : Option.some(span)
