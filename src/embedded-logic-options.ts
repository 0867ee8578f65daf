import { Duration } from "effect"
import type { GatewayConfig } from "./adapters/config/GatewayConfig.js"
import type { LogicEmbeddedOptions } from "./adapters/logic-embedded/LogicEmbedded.js"

/**
 * The embedded Logic's options from the configuration: one reading for both composition roots,
 * the gateway in embedded mode (`main.ts`) and the reference Logic service (`logic-main.ts`).
 */
export const embeddedLogicOptions = (config: GatewayConfig): LogicEmbeddedOptions => ({
  databasePath: config.embedded.databasePath,
  synchronous: config.embedded.synchronous,
  commitIntervalMs: Duration.toMillis(config.embedded.commitInterval),
  secretKey: config.auth.secretKey,
  tokenTtlSeconds: Duration.toSeconds(config.auth.tokenTtl),
  bcryptRounds: config.auth.bcryptCost,
  hashConcurrency: config.auth.hashConcurrency,
  hashQueue: config.auth.hashQueue,
  maxContentBytes: config.limits.maxMessageBytes,
  maxGroupMembers: config.limits.maxGroupMembers,
  maxPageBytes: config.limits.maxPageBytes,
  sessionPageSize: config.limits.sessionPageSize
})
