import { Config, Duration, Effect, Layer } from "effect"
import { clientAddressingConfig } from "../net/ClientAddress.js"
import { duration, list, num, sharedLimitSettings } from "../settings/Settings.js"
import type { HttpOptions } from "./HttpApi.js"
import { layer } from "./HttpApi.js"

/** `security.cors_origins`. */
export const corsSettings = Config.nested(Config.all({ corsOrigins: list("cors_origins", ["*"]) }), "security")

/** `limits.*` of the HTTP API's token buckets. */
export const httpLimitSettings = Config.nested(
  Config.all({
    authPerIpPerMinute: num("auth_per_ip_per_minute", 30),
    failedLoginsPerUsername: num("failed_logins_per_username", 5),
    failedLoginWindow: duration("failed_login_window", "15m"),
    sessionPerUserPerSecond: num("session_per_user_per_second", 50)
  }),
  "limits"
)

/** The HTTP API's options from `security` and `limits`; a bad address list fails naming its key. */
export const httpOptionsConfig = Effect.flatMap(
  Config.all({ cors: corsSettings, limits: httpLimitSettings, shared: sharedLimitSettings }),
  ({ cors, limits, shared }) =>
    Effect.map(clientAddressingConfig, (addressing): HttpOptions => ({
      corsOrigins: cors.corsOrigins,
      maxBodyBytes: 1024 * 1024,
      rateLimits: {
        authPerIpPerMinute: limits.authPerIpPerMinute,
        sessionPerUserPerSecond: limits.sessionPerUserPerSecond,
        failedLoginsPerUsername: limits.failedLoginsPerUsername,
        failedLoginWindowSeconds: Duration.toSeconds(limits.failedLoginWindow)
      },
      addressing,
      maxGroupMembers: shared.maxGroupMembers
    }))
)

export const layerConfig = Layer.unwrapEffect(Effect.map(httpOptionsConfig, (options) => layer(options)))
