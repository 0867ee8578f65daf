import { NodeRuntime } from "@effect/platform-node"
import { Duration, Effect, Layer, Option, Stream, SubscriptionRef } from "effect"
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
import type { GatewayConfig } from "./adapters/config/GatewayConfig.js"
import { loadConfig } from "./adapters/config/GatewayConfig.js"
import { watchService } from "./adapters/etcd/Discovery.js"
import { layerGatewayIdentity, layerRegistry, ServiceRegistration } from "./adapters/etcd/Registry.js"
import * as PushServer from "./adapters/grpc-push/PushServer.js"
import * as HttpApi from "./adapters/http/HttpApi.js"
import * as LogicEmbedded from "./adapters/logic-embedded/LogicEmbedded.js"
import * as LogicGrpc from "./adapters/logic-grpc/LogicGrpc.js"
import { NodeServer } from "./adapters/node-http/NodeServer.js"
import { layerLogger } from "./adapters/obs/Logging.js"
import { layerPrometheus } from "./adapters/obs/PrometheusMetrics.js"
import { layerTracing } from "./adapters/obs/Tracing.js"
import * as FrameCodec from "./adapters/protobuf/FrameCodec.js"
import * as WebSocketGateway from "./adapters/ws/WebSocketGateway.js"

const isCluster = (config: GatewayConfig) => config.etcd.endpoints.length > 0

const hostPort = (host: string, port: number) => `${host}:${port}`

/** Logic in-process on SQLite, or the logic-service instances etcd knows of, over gRPC. */
const logicLayer = (config: GatewayConfig): Layer.Layer<Logic, LogicEmbedded.EmbeddedLogicError, PushDelivery | Metrics> =>
  isCluster(config)
    ? LogicGrpc.layer({
      deadline: config.logic.timeout,
      retries: config.logic.retries,
      endpoints: Effect.gen(function*() {
        const instances = yield* watchService({
          endpoints: config.etcd.endpoints,
          namespace: config.registry.namespace,
          serviceName: config.logicServiceName
        })
        const addresses = yield* SubscriptionRef.make<ReadonlyArray<string>>([])
        yield* instances.changes.pipe(
          Stream.runForEach((list) => SubscriptionRef.set(addresses, list.map((instance) => instance.address))),
          Effect.forkScoped
        )
        return addresses
      })
    })
    : LogicEmbedded.layer({
      databasePath: config.embedded.databasePath,
      synchronous: config.embedded.synchronous,
      secretKey: config.auth.secretKey,
      tokenTtlSeconds: Duration.toSeconds(config.auth.tokenTtl)
    })

/** In cluster mode the registration comes first (it names the gateway) and is revoked by the drain gate. */
const registryLayer = (config: GatewayConfig) =>
  layerRegistry({
    endpoints: config.etcd.endpoints,
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

const identityLayer = (config: GatewayConfig) =>
  isCluster(config)
    ? layerGatewayIdentity().pipe(Layer.provideMerge(registryLayer(config)))
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
                http: hostPort(config.service.host, config.service.httpPort),
                websocket: `ws://${hostPort(config.service.host, config.service.httpPort)}${config.ws.path}`,
                grpc_push: hostPort(config.service.host, config.service.grpcPort),
                metrics: config.observability.metrics.enabled
                  ? `http://${hostPort(config.service.host, config.observability.metrics.port)}${config.observability.metrics.path}`
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

export const gatewayLayer = (config: GatewayConfig) => {
  const addressing = HttpApi.makeClientAddressing({
    ipAllow: config.security.ipAllow,
    ipDeny: config.security.ipDeny,
    trustedProxies: config.security.trustedProxies
  })

  const base = Layer.mergeAll(
    ConnectionHub.layer,
    FrameCodec.layer,
    Readiness.layer,
    config.observability.metrics.enabled
      ? layerPrometheus({ port: config.observability.metrics.port, path: config.observability.metrics.path, host: config.service.host })
      : Metrics.layerNoop,
    identityLayer(config)
  )

  const useCases = Layer.mergeAll(
    Dispatcher.layer({
      // The gRPC adapter bounds each call by logic.timeout itself; this is the outer guard.
      chatTimeout: isCluster(config) ? Duration.sum(config.logic.timeout, Duration.seconds(1)) : Duration.zero,
      messagesPerSecond: config.limits.messagesPerSecond,
      messageBurst: config.limits.messageBurst > 0 ? config.limits.messageBurst : undefined
    }),
    // A Logic across the network is worth a short cache of valid tokens; the embedded one is not.
    Authenticator.layer({ cacheTtl: isCluster(config) ? "30 seconds" : 0 })
  )

  const entryPoints = Layer.mergeAll(
    HttpApi.layer({
      ...HttpApi.defaultHttpOptions,
      corsOrigins: config.security.corsOrigins,
      rateLimits: {
        authPerIpPerMinute: config.limits.authPerIpPerMinute,
        sessionPerUserPerSecond: config.limits.sessionPerUserPerSecond
      },
      ipAllow: config.security.ipAllow,
      ipDeny: config.security.ipDeny,
      trustedProxies: config.security.trustedProxies
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
      clientIp: addressing.clientIp,
      ipAllowed: addressing.ipAllowed
    }),
    PushServer.layer({ port: config.service.grpcPort, host: config.service.host })
  )

  // Each step is built after the one below it and released before it: that is the shutdown order.
  return drainGate(config).pipe(
    Layer.provideMerge(entryPoints),
    Layer.provideMerge(NodeServer.layer({ port: config.service.httpPort, host: config.service.host })),
    Layer.provideMerge(useCases),
    Layer.provideMerge(
      PresenceBatcher.layer({
        batchSize: config.statusBatcher.batchSize,
        flushInterval: config.statusBatcher.flushInterval
      })
    ),
    Layer.provideMerge(logicLayer(config)),
    Layer.provideMerge(PushDelivery.layer),
    Layer.provideMerge(base)
  )
}

export const observabilityLayer = (config: GatewayConfig) =>
  Layer.mergeAll(
    layerLogger({ format: config.log.format, level: config.log.level }),
    layerTracing({
      enabled: config.observability.trace.enabled && config.observability.trace.endpoint !== "",
      endpoint: config.observability.trace.endpoint,
      samplerRatio: config.observability.trace.sampler,
      serviceName: config.service.name,
      serviceVersion: config.service.version
    })
  )

/** A shutdown that outlives the budget is cut short: a stuck peer must not keep the process alive. */
const hardShutdownTimer = (config: GatewayConfig) =>
  Effect.sync(() => {
    const arm = () => {
      setTimeout(() => {
        process.stderr.write(
          `${JSON.stringify({ level: "ERROR", message: "shutdown exceeded its budget; exiting", seconds: config.shutdown.timeoutSeconds })}\n`
        )
        process.exit(1)
      }, config.shutdown.timeoutSeconds * 1000).unref()
    }
    process.once("SIGTERM", arm)
    process.once("SIGINT", arm)
  })

/** For benchmarks: a process started with --expose-gc runs a full GC on SIGUSR2. */
const gcOnSignal = Effect.sync(() => {
  const gc = (globalThis as { gc?: () => void }).gc
  if (typeof gc === "function") process.on("SIGUSR2", () => gc())
})

const program = Effect.gen(function*() {
  const config = yield* loadConfig()
  yield* hardShutdownTimer(config)
  yield* gcOnSignal
  return yield* Layer.launch(gatewayLayer(config)).pipe(Effect.provide(observabilityLayer(config)))
})

NodeRuntime.runMain(program, { disablePrettyLogger: true })
