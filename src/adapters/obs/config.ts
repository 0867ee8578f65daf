import { Config, Effect, Layer } from "effect"
import { Metrics } from "../../application/ports/Metrics.js"
import { bool, int, num, serviceSettings, str } from "../platform/config/Settings.js"
import { layerLogger } from "./Logging.js"
import { layerPrometheus } from "./PrometheusMetrics.js"
import { layerTracing } from "./Tracing.js"

/** `observability.*`: OTLP traces and the Prometheus endpoint. */
export const observabilitySettings = Config.nested(
  Config.all({
    trace: Config.nested(
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
    ),
    metrics: Config.nested(
      Config.all({
        enabled: bool("enabled", true),
        port: int("port", 9092),
        path: str("path", "/metrics"),
        // Loopback unless said otherwise: a scrape endpoint is for the machine's agent, not the Internet.
        host: str("host", "127.0.0.1")
      }),
      "metrics"
    )
  }),
  "observability"
)

/** `log.*`. */
export const logSettings = Config.nested(
  Config.all({
    // `console` is upstream's name for the human-readable format.
    format: Config.literal("json", "pretty", "console")("format").pipe(
      Config.map((format) => (format === "json" ? "json" as const : "pretty" as const)),
      Config.withDefault("json" as const)
    ),
    level: str("level", "info")
  }),
  "log"
)

/** Whether spans are exported at all: on, and a collector named. */
export const tracingEnabledConfig = Config.map(
  observabilitySettings,
  ({ trace }) => trace.enabled && trace.endpoint !== ""
)

/** The Prometheus adapter on `observability.metrics.host`, or no metrics when `observability.metrics.enabled` is false. */
export const layerMetricsConfig = Layer.unwrapEffect(
  Effect.map(
    observabilitySettings,
    ({ metrics }) =>
      metrics.enabled
        ? layerPrometheus({ port: metrics.port, path: metrics.path, host: metrics.host })
        : Metrics.layerNoop
  )
)

export const layerTracingConfig = Layer.unwrapEffect(
  Effect.map(
    Config.all({ observability: observabilitySettings, service: serviceSettings, enabled: tracingEnabledConfig }),
    ({ enabled, observability: { trace }, service }) =>
      layerTracing({
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

export const layerLoggerConfig = Layer.unwrapEffect(Effect.map(logSettings, layerLogger))
