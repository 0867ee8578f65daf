import { NodeRuntime } from "@effect/platform-node"
import { Duration, Effect, Layer } from "effect"
import { configDirectory } from "./adapters/platform/config/GatewayConfig.js"
import { etcdSecurity } from "./adapters/etcd/Client.js"
import { watchService } from "./adapters/etcd/Discovery.js"
import { layerRegistry } from "./adapters/etcd/Registry.js"
import { InternalAuth } from "./adapters/platform/grpc/Security.js"
import * as FrontDoor from "./adapters/platform/net/FrontDoor.js"
import { logicEmbeddedOptionsConfig } from "./adapters/logic-embedded/config.js"
import { makeEmbeddedLogic } from "./adapters/logic-embedded/LogicEmbedded.js"
import * as ReferenceLogic from "./adapters/logic-server/ReferenceLogic.js"
import { layerLogger, reportStartupFailure } from "./adapters/obs/Logging.js"
import { guardShutdownSignals } from "./adapters/platform/process/ShutdownSignals.js"
import { loadConfigReport } from "./gateway-config.js"

/**
 * `npm run logic`: the reference Logic service. Same configuration names as the gateway, read from
 * `logic.yaml` / `logic.<env>.yaml` / `.env` in the same directory; its own defaults are the service
 * name `logic-service`, gRPC port 15090 and a local etcd.
 */
const program = Effect.gen(function*() {
  const { config, provider } = yield* loadConfigReport({
    directory: configDirectory(process.cwd(), process.env),
    environment: process.env,
    name: "logic",
    defaults: {
      RESONANCE_SERVICE_NAME: "logic-service",
      RESONANCE_SERVICE_GRPC_PORT: "15090",
      RESONANCE_ETCD_ENDPOINTS: "127.0.0.1:2379"
    }
  })
  yield* guardShutdownSignals(config.shutdown.timeoutSeconds)
  const embeddedOptions = yield* Effect.withConfigProvider(logicEmbeddedOptionsConfig, provider)
  const advertised = `${config.service.advertiseHost}:${config.service.grpcPort}`
  const etcd = { endpoints: config.etcd.endpoints, ...(yield* etcdSecurity(config.etcd)) }
  const logic = ReferenceLogic.layer({
    makeLogic: (publish) => makeEmbeddedLogic(embeddedOptions, publish),
    gateways: watchService({ ...etcd, namespace: config.registry.namespace, serviceName: "gateway-service" }),
    port: config.service.grpcPort,
    host: config.service.grpcHost
  })
  // Registered once serving, revoked first on shutdown.
  const registry = layerRegistry({
    ...etcd,
    namespace: config.registry.namespace,
    serviceName: config.service.name,
    version: config.service.version,
    ttlSeconds: Duration.toSeconds(config.registry.defaultTtl),
    metadata: {},
    grpcEndpoint: `grpc://${advertised}`
  })
  const ready = Layer.effectDiscard(
    Effect.logInfo("logic service ready").pipe(Effect.annotateLogs({ grpc: advertised, etcd: config.etcd.endpoints.join(",") }))
  )
  return yield* Layer.launch(
    ready.pipe(
      Layer.provideMerge(registry),
      Layer.provideMerge(logic),
      Layer.provide(InternalAuth.layer(config.internal)),
      Layer.provide(FrontDoor.layerConfig)
    )
  ).pipe(
    Effect.provide(layerLogger({ format: config.log.format, level: config.log.level }))
  )
})

// Until the configuration names a log format, one JSON line per event, as in production.
NodeRuntime.runMain(program.pipe(reportStartupFailure, Effect.provide(layerLogger({ format: "json", level: "info" }))), {
  disablePrettyLogger: true,
  disableErrorReporting: true
})
