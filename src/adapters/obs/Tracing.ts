import * as NodeSdk from "@effect/opentelemetry/NodeSdk"
import { OTLPTraceExporter } from "@opentelemetry/exporter-trace-otlp-http"
import {
  BatchSpanProcessor,
  type InMemorySpanExporter,
  ParentBasedSampler,
  SimpleSpanProcessor,
  TraceIdRatioBasedSampler
} from "@opentelemetry/sdk-trace-base"
import { Layer } from "effect"

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
