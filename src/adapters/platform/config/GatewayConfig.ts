/**
 * Where a process's settings come from (`GatewayConfig/Sources`): files and environment merged by
 * precedence into one `ConfigProvider`. What is read from it is each adapter's own `Config` slice;
 * `src/gateway-config.ts` assembles them.
 */
export type { Collected, ConfigReport, ConfigSources } from "./GatewayConfig/Sources.js"
export {
  collect,
  configDirectory,
  defaultSources,
  ENV_PREFIX,
  flattenYaml,
  parseDotEnv,
  providerFromSettings
} from "./GatewayConfig/Sources.js"
