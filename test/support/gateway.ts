import { Effect, Layer, Logger, LogLevel } from "effect"
import type { ConfigProvider } from "effect"
import * as LogicGrpc from "../../src/adapters/logic-grpc/LogicGrpc.js"
import { flattenYaml, providerFromSettings } from "../../src/adapters/platform/config/GatewayConfig.js"
import * as NodeServer from "../../src/adapters/platform/net/NodeServer.js"
import { GatewayIdentity } from "../../src/application/ports/GatewayIdentity.js"
import type { LogicShape } from "../../src/application/ports/Logic.js"
import { Logic } from "../../src/application/ports/Logic.js"
import type { MetricsShape } from "../../src/application/ports/Metrics.js"
import { Metrics } from "../../src/application/ports/Metrics.js"
import { ServiceDiscovery } from "../../src/application/ports/ServiceDiscovery.js"
import { logicError } from "../../src/domain/Errors.js"
import * as Gateway from "../../src/Gateway.js"
import type { UseCaseOverrides } from "../../src/Gateway.js"

export * from "./ws-client.js"

/**
 * The one test root: the production gateway graph (`Gateway.layer`, or `Gateway.core` without the
 * listeners) over test ports, configured as production is, through a ConfigProvider with the keys
 * of README "Configuration". A test says what differs in settings, and passes use-case options
 * (`overrides`) only where no key names them.
 */

/** Settings as the YAML has them: nested sections, the keys of README "Configuration", lists as arrays. */
export interface Settings {
  readonly [key: string]: Setting
}
export type Setting = string | number | boolean | ReadonlyArray<string | number> | Settings | undefined

/** What every test gateway has unless a test says otherwise: loopback, ephemeral ports, no metrics server, no drain. */
export const testSettings: Settings = {
  service: { name: "gateway-test", bind_host: "127.0.0.1", http_port: 0, grpc_host: "127.0.0.1", grpc_port: 0 },
  push: { enabled: false },
  observability: { metrics: { enabled: false, host: "127.0.0.1", port: 0 }, trace: { endpoint: "" } },
  // A roomy front door: the machine's descriptor limit, no memory pressure (tests share the machine).
  overload: {
    max_open_files: 20_000,
    connection_budget: 19_000,
    max_heap_bytes: Number.MAX_SAFE_INTEGER,
    max_rss_bytes: Number.MAX_SAFE_INTEGER
  },
  shutdown: { drain_seconds: 0 }
}

const isSection = (value: Setting): value is Settings => typeof value === "object" && value !== null && !Array.isArray(value)

/** `over` on top of `base`, section by section; a list or a value replaces what was there. */
export const mergeSettings = (base: Settings, over: Settings): Settings => {
  const merged: Record<string, Setting> = { ...base }
  for (const [key, value] of Object.entries(over)) {
    const below = merged[key]
    merged[key] = isSection(value) && isSection(below) ? mergeSettings(below, value) : value
  }
  return merged
}

/** `settings` over the test defaults, read as production reads its YAML: flattened to `RESONANCE_*`, lists comma-joined. */
export const testConfig = (settings: Settings = {}): ConfigProvider.ConfigProvider =>
  providerFromSettings(flattenYaml(mergeSettings(testSettings, settings)))

/** Tokens of the fake Logic: `tok-<username>` is valid, anything else is refused. */
export const tokenFor = (username: string) => `tok-${username}`

/**
 * The fake Logic of a test gateway: `tok-<username>` tokens (and any three-part token, as the JWT
 * of `jwt-user`), presence accepted, no revocation log (as upstream's Go Logic: the Authenticator
 * stops polling it, which on a test clock moved by hours would otherwise run for ever); every other
 * call unavailable unless the test overrides it.
 */
export const testLogic = (overrides: Partial<LogicShape> = {}): Partial<LogicShape> => ({
  validateToken: (token) =>
    token.startsWith("tok-")
      ? Effect.succeed({ username: token.slice(4), nickname: token.slice(4), avatarUrl: "" })
      : token.includes(".") && token.split(".").length === 3
      ? Effect.succeed({ username: "jwt-user", nickname: "", avatarUrl: "" })
      : Effect.fail(logicError("unauthenticated", "invalid access token")),
  syncStatus: () => Effect.void,
  listRevocations: () => Effect.fail(logicError("unimplemented", "no revocation log")),
  ...overrides
})

/** The cluster mode's Logic (`LogicGrpc.layerConfig`, within `logic.*`), the `logic-service` instances at `addresses` instead of etcd's. */
export const grpcLogic = (...addresses: ReadonlyArray<string>) =>
  LogicGrpc.layerConfig.pipe(Layer.provide(ServiceDiscovery.layerTest({ "logic-service": addresses })))

export interface TestGatewayOptions<EL = never> {
  /** Settings over the test defaults, e.g. `{ limits: { max_connections_per_ip: 3 } }`. */
  readonly config?: Settings
  /** Methods of the fake Logic (over `testLogic`'s). */
  readonly logic?: Partial<LogicShape>
  /** A Logic adapter instead of the fake one (e.g. `grpcLogic(address)`). */
  readonly logicLayer?: Gateway.GatewayPorts<EL, never, never>["logic"]
  /** What the Metrics port records (nothing unless given). */
  readonly metrics?: Partial<MetricsShape>
  readonly identity?: string
  /** Use-case options no configuration key names (a deadline, a retry schedule, a test-sized limit). */
  readonly overrides?: UseCaseOverrides
  /** Default Warning: a test that asserts on logs asks for more. */
  readonly logLevel?: LogLevel.LogLevel
}

/** The ports of a test gateway: the fake (or given) Logic, a fixed id, test metrics. */
export const testPorts = <EL>(options: TestGatewayOptions<EL>): Gateway.GatewayPorts<EL, never, never> => ({
  logic: options.logicLayer ?? Logic.layerTest(testLogic(options.logic)),
  identity: GatewayIdentity.layerTest(options.identity),
  metrics: Metrics.layerTest(options.metrics)
})

const configured = <A, E, R>(layer: Layer.Layer<A, E, R>, options: TestGatewayOptions<unknown>) =>
  layer.pipe(
    Layer.provide(Logger.minimumLogLevel(options.logLevel ?? LogLevel.Warning)),
    Layer.provide(Layer.setConfigProvider(testConfig(options.config)))
  )

/** `Gateway.core` over the test ports: the application without listeners, for tests of use cases. */
export const testCore = <EL = never>(options: TestGatewayOptions<EL> = {}) =>
  configured(Gateway.core(testPorts(options), options.overrides), options)

/** `Gateway.layer` over the test ports: the whole gateway, listening on ephemeral loopback ports. */
export const testGateway = <EL = never>(options: TestGatewayOptions<EL> = {}) =>
  configured(Gateway.layer(testPorts(options), options.overrides), options)

/** The port of the gateway's HTTP and WebSocket server. */
export const serverPort = Effect.map(NodeServer.NodeServer, (s) => s.port)

export const promise = <A>(thunk: () => Promise<A>) => Effect.promise(thunk)
