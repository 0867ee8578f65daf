import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import { Committed } from "./application/Committed.js"
import { Metrics } from "./application/ports/Metrics.js"
import { Effect, Layer } from "effect"
import * as Discovery from "./adapters/etcd/Discovery.js"
import * as Registry from "./adapters/etcd/Registry.js"
import * as LogicEmbedded from "./adapters/logic-embedded/LogicEmbedded.js"
import * as ReferenceLogic from "./adapters/logic-server/ReferenceLogic.js"
import * as Logging from "./adapters/obs/Logging.js"
import { collect, configDirectory, providerFromSettings } from "./adapters/platform/config/GatewayConfig.js"
import { serviceSettings } from "./adapters/platform/config/Settings.js"
import * as InternalAuth from "./adapters/platform/grpc/Security.js"
import * as FrontDoor from "./adapters/platform/net/FrontDoor.js"
import * as ShutdownSignals from "./adapters/platform/process/ShutdownSignals.js"

/**
 * `npm run logic`: the reference Logic service. Same configuration names as the gateway, read from
 * `logic.yaml` / `logic.<env>.yaml` / `.env` in the same directory; its own defaults are the service
 * name `logic-service`, gRPC port 15090 and a local etcd.
 */
const sources = {
  directory: configDirectory(process.cwd(), process.env),
  environment: process.env,
  name: "logic",
  defaults: { RESONANCE_SERVICE_NAME: "logic-service", RESONANCE_SERVICE_GRPC_PORT: "15090", RESONANCE_ETCD_ENDPOINTS: "127.0.0.1:2379" }
}

/** The embedded Logic on SQLite behind its gRPC port, pushing what it commits to the gateways etcd lists. */
const referenceLogic = ReferenceLogic.layerConfig.pipe(
  Layer.provideMerge(LogicEmbedded.layerConfig),
  Layer.provide(Committed.layer),
  Layer.provide(Layer.unwrapEffect(Effect.map(Discovery.optionsConfig, (etcd) =>
    Layer.scoped(ReferenceLogic.LiveGateways, Discovery.watchService({ ...etcd, serviceName: "gateway-service" }))))),
  Layer.provide(Metrics.layerNoop)
)

const program = Effect.gen(function*() {
  const { settings } = yield* collect(sources)
  const ready = Layer.effectDiscard(Effect.flatMap(serviceSettings, (service) =>
    Effect.logInfo("logic service ready").pipe(Effect.annotateLogs({ grpc: `${service.advertiseHost}:${service.grpcPort}` }))))
  // Registered once serving, revoked first on shutdown.
  return yield* Layer.launch(ready.pipe(
    Layer.provideMerge(Registry.layerConfig("logic")),
    Layer.provideMerge(referenceLogic),
    Layer.provide(InternalAuth.layerConfig),
    Layer.provide(FrontDoor.layerConfig),
    Layer.provide(ShutdownSignals.layerConfig)
  )).pipe(Effect.provide(Logging.layerConfig), Effect.withConfigProvider(providerFromSettings(settings)))
})

// Until the configuration names a log format, one JSON line per event, as in production.
NodeRuntime.runMain(program.pipe(Logging.reportStartupFailure, Effect.provide(Logging.layer({ format: "json", level: "info" }))), {
  disablePrettyLogger: true,
  disableErrorReporting: true
})
