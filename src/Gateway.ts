import { Config, Effect, Layer } from "effect"
import * as Os from "node:os"
import { Accounts } from "./application/Accounts.js"
import { Authenticator } from "./application/Authenticator.js"
import type { AuthenticatorOptions } from "./application/Authenticator.js"
import { Committed } from "./application/Committed.js"
import { ConnectionHub } from "./application/ConnectionHub.js"
import { Dispatcher } from "./application/Dispatcher.js"
import type { DispatcherOptions } from "./application/Dispatcher.js"
import * as DrainGate from "./application/DrainGate.js"
import { GatewayIdentity } from "./application/ports/GatewayIdentity.js"
import type { Logic } from "./application/ports/Logic.js"
import type { Metrics } from "./application/ports/Metrics.js"
import { PresenceBatcher } from "./application/PresenceBatcher.js"
import type { PresenceBatcherOptions } from "./application/PresenceBatcher.js"
import { PushDelivery } from "./application/PushDelivery.js"
import { Readiness } from "./application/Readiness.js"
import { Sessions } from "./application/Sessions.js"
import * as Discovery from "./adapters/etcd/Discovery.js"
import * as Registry from "./adapters/etcd/Registry.js"
import * as PushServer from "./adapters/grpc-push/PushServer.js"
import * as Jwt from "./adapters/platform/auth/Jwt.js"
import * as HttpApi from "./adapters/http/HttpApi.js"
import * as LogicEmbedded from "./adapters/logic-embedded/LogicEmbedded.js"
import * as LogicGrpc from "./adapters/logic-grpc/LogicGrpc.js"
import * as PrometheusMetrics from "./adapters/obs/PrometheusMetrics.js"
import { tracingEnabledConfig } from "./adapters/obs/Tracing.js"
import { etcdEndpointsSetting, serviceSettings, sharedLimitSettings } from "./adapters/platform/config/Settings.js"
import * as InternalAuth from "./adapters/platform/grpc/Security.js"
import * as FrontDoor from "./adapters/platform/net/FrontDoor.js"
import * as NodeServer from "./adapters/platform/net/NodeServer.js"
import * as FrameCodec from "./adapters/protobuf/FrameCodec.js"
import * as WebSocketGateway from "./adapters/ws/WebSocketGateway.js"
import { dispatcherLimitSettings, pendingSettings, revocationSettings, statusBatcherSettings } from "./gateway-config.js"

/**
 * The gateway graph: every Layer of a gateway, built from the ports of its mode. `main.ts` runs
 * `layerConfig` (the mode from `etcd.endpoints`); tests run `layer` with test ports. Each Layer
 * reads its own configuration slice through the ConfigProvider in place.
 */

/** What differs between the modes, and between production and a test. */
export interface GatewayPorts<EL, EI, EM> {
  /** In-process on SQLite, over gRPC to the instances etcd knows, or a test Logic. */
  readonly logic: Layer.Layer<Logic, EL, Metrics | InternalAuth.InternalAuth | Committed | FrontDoor.FrontDoor>
  /** Who this gateway is: a fixed id, or the one claimed in etcd (with its `ServiceRegistration`). */
  readonly identity: Layer.Layer<GatewayIdentity, EI>
  readonly metrics: Layer.Layer<Metrics, EM, FrontDoor.FrontDoor>
}

/**
 * Options of the use cases that a test sets outright, over what the configuration says (a
 * deadline, a retry schedule, a limit no key names). Production passes none.
 */
export interface UseCaseOverrides {
  readonly dispatcher?: DispatcherOptions
  readonly presence?: Partial<PresenceBatcherOptions>
  readonly authenticator?: AuthenticatorOptions
}

// The use cases know nothing of configuration: their options are read here.
const dispatcher = (overrides: DispatcherOptions = {}) =>
  Layer.unwrapEffect(Effect.map(
    Config.all({ limits: dispatcherLimitSettings, shared: sharedLimitSettings, ws: pendingSettings, traceChats: tracingEnabledConfig }),
    ({ limits, shared, traceChats, ws }) =>
      Dispatcher.layer({
        // Each Logic adapter bounds its own calls (the gRPC one by `logic.timeout`, retries included).
        chatTimeout: 0,
        ...limits,
        maxContentBytes: shared.maxMessageBytes,
        maxPendingBytes: ws.maxPendingBytes,
        traceChats,
        ...overrides
      })
  ))

// Revocations are read from Logic in either mode: other gateways, or a restart, may have seen the Logout.
const authenticator = (overrides: AuthenticatorOptions = {}) =>
  Layer.unwrapEffect(Effect.map(revocationSettings, ({ revocationPollInterval }) =>
    Authenticator.layer({ cacheTtl: "30 seconds", revocationPoll: revocationPollInterval, ...overrides })))

const presence = (overrides: Partial<PresenceBatcherOptions> = {}) =>
  Layer.unwrapEffect(Effect.map(statusBatcherSettings, (settings) => PresenceBatcher.layer({ ...settings, ...overrides })))

// Logins: failures counted per (username, address) within the window; the session rules of the API.
const accounts = Layer.unwrapEffect(Effect.map(HttpApi.httpLimitSettings, (limits) =>
  Accounts.layer({ failuresPerUserAndAddress: limits.failedLoginsPerUserPerIp, failureWindow: limits.failedLoginWindow })))

const sessions = Layer.unwrapEffect(Effect.map(sharedLimitSettings, (shared) => Sessions.layer({ maxGroupMembers: shared.maxGroupMembers })))

/** The application over `ports`: every use case, the ports they share, the front door; no listener but metrics'. */
export const core = <EL, EI, EM>(ports: GatewayPorts<EL, EI, EM>, overrides: UseCaseOverrides = {}) => {
  const base = Layer.mergeAll(
    InternalAuth.layerConfig,
    ConnectionHub.layer,
    FrameCodec.layer,
    Readiness.layer,
    Committed.layer,
    ports.metrics,
    ports.identity
  ).pipe(Layer.provideMerge(FrontDoor.layerConfig))
  return Layer.mergeAll(dispatcher(overrides.dispatcher), accounts, sessions).pipe(
    Layer.provideMerge(authenticator(overrides.authenticator)),
    Layer.provideMerge(presence(overrides.presence)),
    Layer.provideMerge(ports.logic),
    // What an in-process Logic commits is pushed from the application's queue, after the acks.
    Layer.provideMerge(PushDelivery.layerCommitted),
    Layer.provideMerge(PushDelivery.layer),
    Layer.provideMerge(base)
  )
}

/** Every Layer of a gateway over `ports`; each step is built after the one below it and released before it. */
export const layer = <EL, EI, EM>(ports: GatewayPorts<EL, EI, EM>, overrides: UseCaseOverrides = {}) =>
  DrainGate.layer.pipe(
    Layer.provideMerge(Layer.mergeAll(HttpApi.layerConfig, WebSocketGateway.layerConfig, PushServer.layerConfig)),
    Layer.provideMerge(NodeServer.layerConfig),
    Layer.provideMerge(core(ports, overrides))
  )

/** Embedded mode: Logic on SQLite in this process, a fixed id. */
const embedded = {
  logic: LogicEmbedded.layerConfigInProcess,
  identity: Layer.unwrapEffect(Effect.map(serviceSettings, (service) => GatewayIdentity.layer(`${service.name}-${Os.hostname()}`))),
  metrics: PrometheusMetrics.layerConfig
}

/** Cluster mode: the Logic instances etcd knows, over gRPC; this gateway registered in etcd. */
const cluster = {
  logic: Layer.merge(LogicGrpc.layerConfig.pipe(Layer.provide(Discovery.layerConfig)), Jwt.layerVerifierConfig),
  identity: Registry.layerConfig("gateway"),
  metrics: PrometheusMetrics.layerConfig
}

/** The gateway in the mode `etcd.endpoints` says: cluster when set, embedded otherwise. */
export const layerConfig = Layer.unwrapEffect(
  Effect.map(etcdEndpointsSetting, (endpoints) => (endpoints.length > 0 ? layer(cluster) : layer(embedded)))
)
