import type { ConfigError } from "effect"
import { Effect } from "effect"
import type { GatewayConfig } from "./GatewayConfig/Schema.js"
import { gatewayConfig } from "./GatewayConfig/Schema.js"
import type { ConfigReport, ConfigSources } from "./GatewayConfig/Sources.js"
import { collect, defaultSources, providerFromSettings } from "./GatewayConfig/Sources.js"

/**
 * The configuration of a process: its settings (`GatewayConfig/Schema`) read from its sources
 * (`GatewayConfig/Sources`), with the hosts resolved as upstream does.
 */
export type { GatewayConfig } from "./GatewayConfig/Schema.js"
export { gatewayConfig, parseDuration } from "./GatewayConfig/Schema.js"
export type { ConfigReport, ConfigSources } from "./GatewayConfig/Sources.js"
export { configDirectory, defaultSources, ENV_PREFIX, flattenYaml, parseDotEnv, providerFromSettings } from "./GatewayConfig/Sources.js"

const isLoopbackHost = (host: string) =>
  host === "localhost" || host === "::1" || host === "[::1]" || host.startsWith("127.") || host.endsWith(".localhost")

/** Upstream's `GetHost`: `service.host`, else `$HOSTNAME`, else `localhost`; then the internal bind that goes with it. */
const resolveHosts = (config: GatewayConfig, environment: Record<string, string | undefined>): GatewayConfig => {
  const advertiseHost = config.service.advertiseHost.trim() !== ""
    ? config.service.advertiseHost.trim()
    : (environment.HOSTNAME ?? "").trim() !== ""
    ? environment.HOSTNAME!.trim()
    : "localhost"
  const cluster = config.etcd.endpoints.length > 0
  const grpcHost = config.service.grpcHost.trim() !== ""
    ? config.service.grpcHost.trim()
    : cluster && !isLoopbackHost(advertiseHost)
    ? "0.0.0.0"
    : "127.0.0.1"
  return { ...config, service: { ...config.service, advertiseHost, grpcHost } }
}

/** The configuration and where it came from. */
export const loadConfigReport = (
  sources: ConfigSources = defaultSources()
): Effect.Effect<{ readonly config: GatewayConfig; readonly report: ConfigReport }, ConfigError.ConfigError | Error> =>
  Effect.flatMap(collect(sources), ({ report, settings }) =>
    Effect.map(
      Effect.withConfigProvider(gatewayConfig, providerFromSettings(settings)),
      (config) => ({ config: resolveHosts(config, sources.environment), report })
    ))

export const loadConfig = (
  sources: ConfigSources = defaultSources()
): Effect.Effect<GatewayConfig, ConfigError.ConfigError | Error> =>
  Effect.map(loadConfigReport(sources), ({ config }) => config)
