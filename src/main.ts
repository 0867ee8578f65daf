import { NodeRuntime } from "@effect/platform-node"
import { Duration, Effect, Either, Layer, Option } from "effect"
import * as Fs from "node:fs"
import * as Os from "node:os"
import { Authenticator } from "./application/Authenticator.js"
import { ConnectionHub } from "./application/ConnectionHub.js"
import { Dispatcher } from "./application/Dispatcher.js"
import { GatewayIdentity } from "./application/ports/GatewayIdentity.js"
import type { Logic } from "./application/ports/Logic.js"
import { Metrics } from "./application/ports/Metrics.js"
import { PresenceBatcher } from "./application/PresenceBatcher.js"
import { PushDelivery } from "./application/PushDelivery.js"
import { Readiness } from "./application/Readiness.js"
import type { ConfigReport, GatewayConfig } from "./adapters/config/GatewayConfig.js"
import { loadConfigReport } from "./adapters/config/GatewayConfig.js"
import type { EtcdClientOptions } from "./adapters/etcd/Client.js"
import { etcdSecurity } from "./adapters/etcd/Client.js"
import { layerServiceDiscovery } from "./adapters/etcd/Discovery.js"
import { layerGatewayIdentity, layerRegistry, ServiceRegistration } from "./adapters/etcd/Registry.js"
import * as PushServer from "./adapters/grpc-push/PushServer.js"
import * as HttpApi from "./adapters/http/HttpApi.js"
import * as LogicEmbedded from "./adapters/logic-embedded/LogicEmbedded.js"
import * as LogicGrpc from "./adapters/logic-grpc/LogicGrpc.js"
import { InternalAuth } from "./adapters/grpc/Security.js"
import { makeClientAddressing } from "./adapters/net/ClientAddress.js"
import type { ClientAddressing } from "./adapters/net/ClientAddress.js"
import { NodeServer } from "./adapters/net/NodeServer.js"
import { layerLogger, reportStartupFailure } from "./adapters/obs/Logging.js"
import { guardShutdownSignals } from "./adapters/process/ShutdownSignals.js"
import { layerPrometheus } from "./adapters/obs/PrometheusMetrics.js"
import { layerTracing } from "./adapters/obs/Tracing.js"
import * as FrameCodec from "./adapters/protobuf/FrameCodec.js"
import * as WebSocketGateway from "./adapters/ws/WebSocketGateway.js"
import { embeddedLogicOptions } from "./embedded-logic-options.js"

const isCluster = (config: GatewayConfig) => config.etcd.endpoints.length > 0

const hostPort = (host: string, port: number) => `${host}:${port}`

/** Logic in-process on SQLite, or the logic-service instances etcd knows of, over gRPC. */
const logicLayer = (
  config: GatewayConfig,
  etcd: EtcdClientOptions
): Layer.Layer<Logic, LogicEmbedded.EmbeddedLogicError, PushDelivery | Metrics | InternalAuth> =>
  isCluster(config)
    ? LogicGrpc.layerDiscovered(config.logicServiceName, {
      deadline: config.logic.timeout,
      attemptTimeout: config.logic.attemptTimeout,
      retries: config.logic.retries
    }).pipe(Layer.provide(layerServiceDiscovery({ ...etcd, namespace: config.registry.namespace })))
    : LogicEmbedded.layer(embeddedLogicOptions(config))

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

export const gatewayLayer = (config: GatewayConfig, addressing: ClientAddressing, etcd: EtcdClientOptions) => {
  const base = Layer.mergeAll(
    InternalAuth.layer(config.internal),
    ConnectionHub.layer,
    FrameCodec.layer,
    Readiness.layer,
    config.observability.metrics.enabled
      ? layerPrometheus({ port: config.observability.metrics.port, path: config.observability.metrics.path, host: config.service.bindHost })
      : Metrics.layerNoop,
    identityLayer(config, etcd)
  )

  const useCases = Layer.mergeAll(
    Dispatcher.layer({
      // The gRPC adapter bounds each call by logic.timeout itself; this is the outer guard.
      chatTimeout: isCluster(config) ? Duration.sum(config.logic.timeout, Duration.seconds(1)) : Duration.zero,
      messagesPerSecond: config.limits.messagesPerSecond,
      messageBurst: config.limits.messageBurst,
      pulsesPerSecond: config.limits.pulsesPerSecond,
      pulseBurst: config.limits.pulseBurst,
      acksPerSecond: config.limits.acksPerSecond,
      ackBurst: config.limits.ackBurst,
      maxContentBytes: config.limits.maxMessageBytes,
      maxPendingBytes: config.ws.maxPendingBytes,
      traceChats: tracingOn(config)
    }),
    // A Logic across the network is worth a short cache of valid tokens, and other gateways revoke
    // tokens there; the embedded Logic is cheap and only this gateway revokes its tokens.
    Authenticator.layer(
      isCluster(config)
        ? { cacheTtl: "30 seconds", revocationPoll: config.auth.revocationPollInterval }
        : { cacheTtl: 0 }
    )
  )

  const entryPoints = Layer.mergeAll(
    HttpApi.layer({
      corsOrigins: config.security.corsOrigins,
      maxBodyBytes: 1024 * 1024,
      rateLimits: {
        authPerIpPerMinute: config.limits.authPerIpPerMinute,
        sessionPerUserPerSecond: config.limits.sessionPerUserPerSecond,
        failedLoginsPerUsername: config.limits.failedLoginsPerUsername,
        failedLoginWindowSeconds: Duration.toSeconds(config.limits.failedLoginWindow)
      },
      addressing,
      maxGroupMembers: config.limits.maxGroupMembers
    }),
    WebSocketGateway.layer({
      path: config.ws.path,
      maxMessageSize: config.ws.maxMessageSize,
      pingInterval: config.ws.pingInterval,
      pongTimeout: config.ws.pongTimeout,
      sendBufferLimit: config.ws.sendBufferLimit,
      maxConnections: config.limits.maxConnections,
      maxConnectionsPerIp: config.limits.maxConnectionsPerIp,
      maxDevicesPerUser: config.limits.maxDevicesPerUser,
      compression: config.ws.compression,
      drainSeconds: config.shutdown.drainSeconds,
      closeMode: config.shutdown.closeMode,
      clientIp: addressing.clientIp,
      ipAllowed: addressing.ipAllowed
    }),
    pushEnabled(config)
      ? Layer.discard(PushServer.layer({ port: config.service.grpcPort, host: config.service.grpcHost }))
      : Layer.empty
  )

  // Each step is built after the one below it and released before it: that is the shutdown order.
  return drainGate(config).pipe(
    Layer.provideMerge(entryPoints),
    Layer.provideMerge(
      NodeServer.layer({
        port: config.service.httpPort,
        host: config.service.bindHost,
        headersTimeoutMs: Duration.toMillis(config.http.headersTimeout),
        requestTimeoutMs: Duration.toMillis(config.http.requestTimeout),
        maxConnections: config.http.maxConnections
      })
    ),
    Layer.provideMerge(useCases),
    Layer.provideMerge(
      PresenceBatcher.layer({
        batchSize: config.statusBatcher.batchSize,
        flushInterval: config.statusBatcher.flushInterval,
        sendOffline: config.statusBatcher.sendOffline,
        maxPending: config.statusBatcher.maxPending
      })
    ),
    Layer.provideMerge(logicLayer(config, etcd)),
    Layer.provideMerge(PushDelivery.layer),
    Layer.provideMerge(base)
  )
}

const tracingOn = (config: GatewayConfig) =>
  config.observability.trace.enabled && config.observability.trace.endpoint !== ""

export const observabilityLayer = (config: GatewayConfig) =>
  Layer.mergeAll(
    layerLogger({ format: config.log.format, level: config.log.level }),
    layerTracing({
      enabled: tracingOn(config),
      endpoint: config.observability.trace.endpoint,
      protocol: config.observability.trace.protocol,
      insecure: config.observability.trace.insecure,
      samplerRatio: config.observability.trace.sampler,
      serviceName: config.service.name,
      serviceVersion: config.service.version
    })
  )

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
      if (config.service.advertiseHost === "localhost" || config.service.advertiseHost.startsWith("127.")) {
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

const program = Effect.gen(function*() {
  const { config, report } = yield* loadConfigReport()
  const addressing = yield* Either.mapLeft(makeClientAddressing(config.security), (error) => new Error(error.message))
  const etcd: EtcdClientOptions = { endpoints: config.etcd.endpoints, ...(yield* etcdSecurity(config.etcd)) }
  yield* guardShutdownSignals(config.shutdown.timeoutSeconds)
  yield* gcOnSignal
  return yield* reportConfiguration(config, report).pipe(
    Effect.zipRight(Layer.launch(gatewayLayer(config, addressing, etcd))),
    Effect.provide(observabilityLayer(config))
  )
})

// Until the configuration names a log format, one JSON line per event, as in production.
NodeRuntime.runMain(program.pipe(reportStartupFailure, Effect.provide(layerLogger({ format: "json", level: "info" }))), {
  disablePrettyLogger: true,
  disableErrorReporting: true
})
