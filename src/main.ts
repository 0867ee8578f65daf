import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import { Effect, Layer } from "effect"
import * as Logging from "./adapters/obs/Logging.js"
import * as Tracing from "./adapters/obs/Tracing.js"
import { collect, defaultSources, providerFromSettings } from "./adapters/platform/config/GatewayConfig.js"
import * as StartupReport from "./adapters/platform/config/StartupReport.js"
import * as ShutdownSignals from "./adapters/platform/process/ShutdownSignals.js"
import * as Gateway from "./Gateway.js"

/**
 * `npm start`: the files and environment become one ConfigProvider (`./configs`, `.env`,
 * `RESONANCE_*`); under it the logger and tracer, then the gateway in the mode the configuration
 * names, each Layer reading its own slice. Launched until a signal; the Layers' finalizers are the
 * shutdown.
 */
const program = Effect.gen(function*() {
  const { report, settings } = yield* collect(defaultSources())
  const gateway = Gateway.layerConfig.pipe(Layer.provide(Layer.mergeAll(ShutdownSignals.layerConfig, StartupReport.layer(report))))
  return yield* Layer.launch(gateway).pipe(
    Effect.provide(Layer.mergeAll(Logging.layerConfig, Tracing.layerConfig)),
    Effect.withConfigProvider(providerFromSettings(settings))
  )
})

// Until the configuration names a log format, one JSON line per event, as in production.
NodeRuntime.runMain(program.pipe(Logging.reportStartupFailure, Effect.provide(Logging.layer({ format: "json", level: "info" }))), {
  disablePrettyLogger: true,
  disableErrorReporting: true
})
