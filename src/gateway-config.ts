import { Config, Effect } from "effect"
import type { ConfigError, ConfigProvider } from "effect"
import type { ConfigReport, ConfigSources } from "./adapters/platform/config/GatewayConfig.js"
import { collect, defaultSources, providerFromSettings } from "./adapters/platform/config/GatewayConfig.js"
import { etcdSettings } from "./adapters/etcd/Client.js"
import { registrySettings } from "./adapters/etcd/Registry.js"
import { internalSettings } from "./adapters/platform/grpc/Security.js"
import { corsSettings, httpLimitSettings } from "./adapters/http/HttpApi.js"
import { accountSettings, embeddedSettings, pageLimitSettings } from "./adapters/logic-embedded/LogicEmbedded.js"
import { logicCallSettings, logicServiceNameSetting } from "./adapters/logic-grpc/LogicGrpc.js"
import { clientAddressSettings } from "./adapters/platform/net/ClientAddress.js"
import { httpServerSettings } from "./adapters/platform/net/NodeServer.js"
import { logSettings } from "./adapters/obs/Logging.js"
import { metricsSettings } from "./adapters/obs/PrometheusMetrics.js"
import { traceSettings } from "./adapters/obs/Tracing.js"
import { pushSettings } from "./adapters/grpc-push/PushServer.js"
import { shutdownTimeoutSettings } from "./adapters/platform/process/ShutdownSignals.js"
import { bool, duration, int, merged, num, serviceSettings, sharedLimitSettings, str } from "./adapters/platform/config/Settings.js"
import { wsDrainSettings, wsLimitSettings, wsSocketSettings } from "./adapters/ws/WebSocketGateway.js"

/**
 * The whole configuration in one value: the adapters' own slices (each key defined once, where it
 * is used) and the few the composition root reads itself. The adapters read their slices through
 * the ConfigProvider; this aggregate is what the configuration tests read every key through.
 */

/** `limits.*` of the Dispatcher: chats per user, pulses and acks per connection. */
export const dispatcherLimitSettings = Config.nested(
  Config.all({
    // Per user, all devices together: no person types 10 messages a second; a script does.
    messagesPerSecond: num("messages_per_second", 10),
    messageBurst: num("message_burst", 20),
    // The official client pulses every 30 s and acks every push it receives.
    pulsesPerSecond: num("pulses_per_second", 1),
    pulseBurst: num("pulse_burst", 10),
    acksPerSecond: num("acks_per_second", 200),
    ackBurst: num("ack_burst", 1000)
  }),
  "limits"
)

/** `ws_config.max_pending_bytes`: frames waiting behind a chat in flight before the socket's reads pause. */
export const pendingSettings = Config.nested(Config.all({ maxPendingBytes: int("max_pending_bytes", 256 * 1024) }), "ws_config")

/** `status_batcher.*`: the PresenceBatcher. */
export const statusBatcherSettings = Config.nested(
  Config.all({
    batchSize: int("batch_size", 50),
    flushInterval: duration("flush_interval", "100ms"),
    sendOffline: bool("send_offline", true),
    maxPending: int("max_pending", 100_000)
  }),
  "status_batcher"
)

/** `auth.revocation_poll_interval`: how often a gateway asks Logic for tokens revoked elsewhere. */
export const revocationSettings = Config.nested(
  Config.all({ revocationPollInterval: duration("revocation_poll_interval", "500ms") }),
  "auth"
)

export const gatewayConfig = Config.all({
  /** Deployment environment; selects `gateway.<env>.yaml`. */
  env: str("env", "development"),
  service: serviceSettings,
  push: pushSettings,
  internal: internalSettings,
  http: httpServerSettings,
  logicServiceName: logicServiceNameSetting,
  ws: merged(wsSocketSettings, pendingSettings),
  observability: Config.all({ trace: traceSettings, metrics: metricsSettings }),
  log: logSettings,
  statusBatcher: statusBatcherSettings,
  etcd: etcdSettings,
  registry: registrySettings,
  embedded: embeddedSettings,
  auth: merged(accountSettings, revocationSettings),
  logic: logicCallSettings,
  limits: merged(
    merged(merged(wsLimitSettings, dispatcherLimitSettings), merged(httpLimitSettings, pageLimitSettings)),
    sharedLimitSettings
  ),
  security: merged(clientAddressSettings, corsSettings),
  shutdown: merged(wsDrainSettings, shutdownTimeoutSettings)
})

export type GatewayConfig = Config.Config.Success<typeof gatewayConfig>

/** The configuration, where it came from, and the provider the adapters' slices read it from. */
export const loadConfigReport = (
  sources: ConfigSources = defaultSources()
): Effect.Effect<
  { readonly config: GatewayConfig; readonly report: ConfigReport; readonly provider: ConfigProvider.ConfigProvider },
  ConfigError.ConfigError | Error
> =>
  Effect.flatMap(collect(sources), ({ report, settings }) => {
    const provider = providerFromSettings(settings)
    return Effect.map(
      Effect.withConfigProvider(gatewayConfig, provider),
      (config) => ({ config, report, provider })
    )
  })

export const loadConfig = (
  sources: ConfigSources = defaultSources()
): Effect.Effect<GatewayConfig, ConfigError.ConfigError | Error> =>
  Effect.map(loadConfigReport(sources), ({ config }) => config)
