import { NodeRuntime } from "@effect/platform-node"
import { Config, Duration, Effect, Layer, Option } from "effect"
import type { ConfigError } from "effect"
import * as Fs from "node:fs"
import * as Os from "node:os"
import { Authenticator } from "./application/Authenticator.js"
import { ConnectionHub } from "./application/ConnectionHub.js"
import { Dispatcher } from "./application/Dispatcher.js"
import { GatewayIdentity } from "./application/ports/GatewayIdentity.js"
import type { Logic } from "./application/ports/Logic.js"
import type { Metrics } from "./application/ports/Metrics.js"
import { PresenceBatcher } from "./application/PresenceBatcher.js"
import { PushDelivery } from "./application/PushDelivery.js"
import { Readiness } from "./application/Readiness.js"
import type { ConfigReport } from "./adapters/platform/config/GatewayConfig.js"
import type { EtcdClientOptions } from "./adapters/etcd/Client.js"
import { etcdClientConfig } from "./adapters/etcd/config.js"
import { layerServiceDiscovery } from "./adapters/etcd/Discovery.js"
import { layerGatewayIdentity, layerRegistry, ServiceRegistration } from "./adapters/etcd/Registry.js"
import * as PushServer from "./adapters/grpc-push/PushServer.js"
import * as HttpApi from "./adapters/http/config.js"
import * as LogicEmbedded from "./adapters/logic-embedded/config.js"
import type { EmbeddedLogicError } from "./adapters/logic-embedded/LogicEmbedded.js"
import * as LogicGrpc from "./adapters/logic-grpc/config.js"
import { InternalAuth } from "./adapters/platform/grpc/Security.js"
import * as FrontDoor from "./adapters/platform/net/FrontDoor.js"
import { NodeServer } from "./adapters/platform/net/NodeServer.js"
import { layerLogger, reportStartupFailure } from "./adapters/obs/Logging.js"
import { guardShutdownSignals } from "./adapters/platform/process/ShutdownSignals.js"
import { layerLoggerConfig, layerMetricsConfig, layerTracingConfig, tracingEnabledConfig } from "./adapters/obs/config.js"
import * as FrameCodec from "./adapters/protobuf/FrameCodec.js"
import { sharedLimitSettings } from "./adapters/platform/config/Settings.js"
import * as WebSocketGateway from "./adapters/ws/config.js"
import type { GatewayConfig } from "./gateway-config.js"
import {
  dispatcherLimitSettings,
  isLoopbackHost,
  loadConfigReport,
  pendingSettings,
  revocationSettings,
  statusBatcherSettings
} from "./gateway-config.js"

const isCluster = (config: GatewayConfig) => config.etcd.endpoints.length > 0

const hostPort = (host: string, port: number) => `${host}:${port}`

/** Logic in-process on SQLite, or the logic-service instances etcd knows of, over gRPC. */
const logicLayer = (
  config: GatewayConfig,
  etcd: EtcdClientOptions
): Layer.Layer<Logic, EmbeddedLogicError | ConfigError.ConfigError, PushDelivery | Metrics | InternalAuth> =>
  isCluster(config)
    ? LogicGrpc.layerConfig.pipe(Layer.provide(layerServiceDiscovery({ ...etcd, namespace: config.registry.namespace })))
    : LogicEmbedded.layerConfig

/** The use cases' options, read here: `src/application` knows nothing of configuration. */
const dispatcherLayer = (cluster: boolean) =>
  Layer.unwrapEffect(Effect.map(
    Config.all({
      limits: dispatcherLimitSettings,
      shared: sharedLimitSettings,
      ws: pendingSettings,
      logic: LogicGrpc.logicCallSettings,
      traceChats: tracingEnabledConfig
    }),
    ({ limits, logic, shared, traceChats, ws }) =>
      Dispatcher.layer({
        // The gRPC adapter bounds each call by logic.timeout itself; this is the outer guard.
        chatTimeout: cluster ? Duration.sum(logic.timeout, Duration.seconds(1)) : Duration.zero,
        ...limits,
        maxContentBytes: shared.maxMessageBytes,
        maxPendingBytes: ws.maxPendingBytes,
        traceChats
      })
  ))

// A Logic across the network is worth a short cache of valid tokens, and other gateways revoke
// tokens there; the embedded Logic is cheap and only this gateway revokes its tokens.
const authenticatorLayer = (cluster: boolean) =>
  cluster
    ? Layer.unwrapEffect(Effect.map(revocationSettings, ({ revocationPollInterval }) =>
      Authenticator.layer({ cacheTtl: "30 seconds", revocationPoll: revocationPollInterval })))
    : Authenticator.layer({ cacheTtl: 0 })

const presenceLayer = Layer.unwrapEffect(Effect.map(statusBatcherSettings, PresenceBatcher.layer))

/** In cluster mode the registration comes first (it names the gateway) and is revoked by the drain gate. */
const registryLayer = (config: GatewayConfig, etcd: EtcdClientOptions) =>
  layerRegistry({
    ...etcd,
    namespace: config.registry.namespace,
    serviceName: config.service.name,
    version: config.service.version,
    ttlSeconds: Duration.toSeconds(config.registry.defaultTtl),
    metadata: {
      http_addr: hostPort(config.service.advertiseHost, config.service.httpPort),
      ws_addr: hostPort(config.service.advertiseHost, config.service.httpPort)
    },
    grpcEndpoint: `grpc://${hostPort(config.service.advertiseHost, config.service.grpcPort)}`
  })

const identityLayer = (config: GatewayConfig, etcd: EtcdClientOptions) =>
  isCluster(config)
    ? layerGatewayIdentity().pipe(Layer.provideMerge(registryLayer(config, etcd)))
    : GatewayIdentity.layer(`${config.service.name}-${Os.hostname()}`)

/**
 * Built last, released first: on shutdown readiness turns false and the etcd entry is revoked
 * before the WebSocket drain starts, so load balancers and the Task service stop sending here.
 */
const drainGate = (config: GatewayConfig) =>
  Layer.scopedDiscard(
    Effect.gen(function*() {
      const readiness = yield* Readiness
      const registration = yield* Effect.serviceOption(ServiceRegistration)
      yield* Effect.acquireRelease(
        readiness.markReady.pipe(
          Effect.zipRight(
            Effect.logInfo("gateway ready").pipe(
              Effect.annotateLogs({
                mode: isCluster(config) ? "cluster" : "embedded",
                http: hostPort(config.service.bindHost, config.service.httpPort),
                websocket: `ws://${hostPort(config.service.bindHost, config.service.httpPort)}${config.ws.path}`,
                grpc_push: pushEnabled(config) ? hostPort(config.service.grpcHost, config.service.grpcPort) : "disabled",
                advertised: isCluster(config) ? config.service.advertiseHost : "(embedded: not registered)",
                metrics: config.observability.metrics.enabled
                  ? `http://${hostPort(config.service.bindHost, config.observability.metrics.port)}${config.observability.metrics.path}`
                  : "disabled"
              })
            )
          )
        ),
        () =>
          readiness.markDraining.pipe(
            Effect.zipRight(Effect.logInfo("draining")),
            Effect.zipRight(
              Option.match(registration, { onNone: () => Effect.void, onSome: (r) => r.deregister })
            )
          )
      )
    })
  )

const pushEnabled = (config: GatewayConfig) => config.push.enabled ?? isCluster(config)

export const gatewayLayer = (config: GatewayConfig, etcd: EtcdClientOptions) => {
  const base = Layer.mergeAll(
    InternalAuth.layerConfig,
    ConnectionHub.layer,
    FrameCodec.layer,
    Readiness.layer,
    layerMetricsConfig,
    identityLayer(config, etcd)
  ).pipe(Layer.provideMerge(FrontDoor.layerConfig))
  const useCases = Layer.mergeAll(dispatcherLayer(isCluster(config)), authenticatorLayer(isCluster(config)))
  const entryPoints = Layer.mergeAll(
    HttpApi.layerConfig,
    WebSocketGateway.layerConfig,
    // The internal bind depends on the mode (see gateway-config's resolveHosts), so it is passed here.
    pushEnabled(config)
      ? Layer.discard(PushServer.layer({ port: config.service.grpcPort, host: config.service.grpcHost }))
      : Layer.empty
  )

  // Each step is built after the one below it and released before it: that is the shutdown order.
  return drainGate(config).pipe(
    Layer.provideMerge(entryPoints),
    Layer.provideMerge(NodeServer.layerConfig),
    Layer.provideMerge(useCases),
    Layer.provideMerge(presenceLayer),
    Layer.provideMerge(logicLayer(config, etcd)),
    Layer.provideMerge(PushDelivery.layer),
    Layer.provideMerge(base)
  )
}

export const observabilityLayer = Layer.mergeAll(layerLoggerConfig, layerTracingConfig)

/** For benchmarks: a process started with --expose-gc runs a full GC on SIGUSR2. */
const gcOnSignal = Effect.sync(() => {
  const gc = (globalThis as { gc?: () => void }).gc
  if (typeof gc === "function") process.on("SIGUSR2", () => gc())
})

/** Which files were read and why this mode: a gateway that silently starts embedded is a support call. */
const reportConfiguration = (config: GatewayConfig, report: ConfigReport) =>
  Effect.gen(function*() {
    yield* Effect.logInfo("configuration loaded").pipe(
      Effect.annotateLogs({
        directory: report.directory,
        files: report.files.length > 0 ? report.files.join(",") : "(none: defaults and environment)"
      })
    )
    if (isCluster(config)) {
      yield* Effect.logInfo("cluster mode: etcd.endpoints is set").pipe(
        Effect.annotateLogs({
          from: report.etcdEndpointsFrom ?? "",
          etcd: config.etcd.endpoints.join(","),
          advertised_host: config.service.advertiseHost,
          grpc_bind: config.service.grpcHost,
          // What a SIGKILL costs: the entry outlives the process by up to this long.
          registry_ttl_seconds: Duration.toSeconds(config.registry.defaultTtl)
        })
      )
      if (isLoopbackHost(config.service.advertiseHost)) {
        yield* Effect.logWarning(
          "the advertised host is a loopback name: a Task service on another machine cannot push here (set service.host)"
        ).pipe(Effect.annotateLogs({ advertised_host: config.service.advertiseHost }))
      }
    } else {
      const fresh = !Fs.existsSync(config.embedded.databasePath)
      yield* Effect.logInfo("embedded mode: no etcd.endpoints in the configuration files or environment").pipe(
        Effect.annotateLogs({
          database: config.embedded.databasePath,
          database_state: fresh ? "new (empty)" : "existing",
          hint: "set etcd.endpoints (RESONANCE_ETCD_ENDPOINTS) for cluster mode"
        })
      )
    }
  })

/** The files and environment become one ConfigProvider; under it each Layer reads its own slice. */
const program = Effect.gen(function*() {
  const { config, provider, report } = yield* loadConfigReport()
  return yield* Effect.gen(function*() {
    const etcd = yield* etcdClientConfig
    yield* guardShutdownSignals(config.shutdown.timeoutSeconds)
    yield* gcOnSignal
    return yield* reportConfiguration(config, report).pipe(
      Effect.zipRight(Layer.launch(gatewayLayer(config, etcd))),
      Effect.provide(observabilityLayer)
    )
  }).pipe(Effect.withConfigProvider(provider))
})

// Until the configuration names a log format, one JSON line per event, as in production.
NodeRuntime.runMain(program.pipe(reportStartupFailure, Effect.provide(layerLogger({ format: "json", level: "info" }))), {
  disablePrettyLogger: true,
  disableErrorReporting: true
})
