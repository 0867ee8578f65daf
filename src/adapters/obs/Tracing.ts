import * as NodeSdk from "@effect/opentelemetry/NodeSdk"
import { OTLPTraceExporter as OtlpGrpcExporter } from "@opentelemetry/exporter-trace-otlp-grpc"
import { OTLPTraceExporter as OtlpHttpExporter } from "@opentelemetry/exporter-trace-otlp-http"
import { credentials } from "@grpc/grpc-js"
import {
  BatchSpanProcessor,
  type InMemorySpanExporter,
  ParentBasedSampler,
  SimpleSpanProcessor,
  type SpanExporter,
  TraceIdRatioBasedSampler
} from "@opentelemetry/sdk-trace-base"
import { Config, Effect, Layer } from "effect"
import { bool, num, serviceSettings, str } from "../platform/config/Settings.js"

/** `auto`: OTLP/gRPC for port 4317 (the collector's gRPC port, as in upstream's YAML), else OTLP/HTTP. */
export type TraceProtocol = "auto" | "grpc" | "http"

export interface TracingOptions {
  readonly enabled: boolean
  /** Collector address: a URL, or `host:port` as Go exporters take it. */
  readonly endpoint: string
  readonly protocol?: TraceProtocol
  /** gRPC only: plaintext to the collector (upstream's `insecure: true`); otherwise TLS. */
  readonly insecure?: boolean
  readonly samplerRatio: number
  readonly serviceName: string
  readonly serviceVersion: string
}

/** The protocol `endpoint` is spoken to: explicit, else by port (4317 gRPC, anything else HTTP). */
export const traceProtocolFor = (endpoint: string, protocol: TraceProtocol = "auto"): "grpc" | "http" => {
  if (protocol !== "auto") return protocol
  const trimmed = endpoint.trim()
  if (trimmed.startsWith("grpc://")) return "grpc"
  try {
    const url = new URL(trimmed.includes("://") ? trimmed : `http://${trimmed}`)
    return url.port === "4317" ? "grpc" : "http"
  } catch {
    return "http"
  }
}

/** `host:port` (or `grpc://host:port`) as the gRPC exporter dials it, with an http(s) scheme. */
export const otlpGrpcUrl = (endpoint: string, insecure: boolean): string => {
  const trimmed = endpoint.trim().replace(/^grpc:\/\//, "")
  if (trimmed.includes("://")) return trimmed
  return `${insecure ? "http" : "https"}://${trimmed}`
}

const exporterFor = (options: TracingOptions): SpanExporter =>
  traceProtocolFor(options.endpoint, options.protocol) === "grpc"
    ? new OtlpGrpcExporter({
      url: otlpGrpcUrl(options.endpoint, options.insecure ?? true),
      credentials: (options.insecure ?? true) ? credentials.createInsecure() : credentials.createSsl()
    })
    : new OtlpHttpExporter({ url: otlpTracesUrl(options.endpoint) })

/**
 * Exports Effect spans over OTLP (gRPC or HTTP) in batches. Root spans are sampled at
 * `samplerRatio`; a span with a remote parent follows the parent's sampled flag. Nothing at all
 * when disabled.
 */
export const layer = (options: TracingOptions): Layer.Layer<never> =>
  options.enabled
    ? NodeSdk.layer(() => ({
      spanProcessor: new BatchSpanProcessor(exporterFor(options)),
      tracerConfig: {
        sampler: new ParentBasedSampler({ root: new TraceIdRatioBasedSampler(options.samplerRatio) })
      },
      resource: { serviceName: options.serviceName, serviceVersion: options.serviceVersion }
    }))
    : Layer.empty

/** Every span is exported synchronously to `exporter`, for tests. */
export const layerTest = (exporter: InMemorySpanExporter): Layer.Layer<never> =>
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

/** `observability.trace.*`: OTLP traces (`disable: true`, upstream's switch, turns them off too). */
export const traceSettings = Config.nested(
  Config.all({
    enabled: Config.all({ enabled: bool("enabled", true), disable: bool("disable", false) }).pipe(
      Config.map(({ disable, enabled }) => enabled && !disable)
    ),
    endpoint: str("endpoint", ""),
    sampler: num("sampler", 1),
    protocol: Config.literal("auto", "grpc", "http")("protocol").pipe(Config.withDefault("auto" as const)),
    insecure: bool("insecure", true)
  }),
  "trace"
).pipe(Config.nested("observability"))

/** Whether spans are exported at all: on, and a collector named. */
export const tracingEnabledConfig = Config.map(traceSettings, (trace) => trace.enabled && trace.endpoint !== "")

/** Tracing as `observability.trace.*` and `service.*` say. */
export const layerConfig = Layer.unwrapEffect(
  Effect.map(
    Config.all({ trace: traceSettings, service: serviceSettings, enabled: tracingEnabledConfig }),
    ({ enabled, service, trace }) =>
      layer({
        enabled,
        endpoint: trace.endpoint,
        protocol: trace.protocol,
        insecure: trace.insecure,
        samplerRatio: trace.sampler,
        serviceName: service.name,
        serviceVersion: service.version
      })
  )
)
