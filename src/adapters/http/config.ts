import { Config, Duration, Effect, Layer } from "effect"
import { clientAddressingConfig } from "../platform/net/ClientAddress.js"
import { duration, int, list, num, sharedLimitSettings } from "../platform/config/Settings.js"
import type { HttpOptions } from "./HttpApi.js"
import { layer } from "./HttpApi.js"

/** `security.cors_origins`. */
export const corsSettings = Config.nested(Config.all({ corsOrigins: list("cors_origins", ["*"]) }), "security")

/** `limits.*` of the HTTP API's token buckets. */
export const httpLimitSettings = Config.nested(
  Config.all({
    authPerIpPerMinute: num("auth_per_ip_per_minute", 30),
    failedLoginsPerUserPerIp: num("failed_logins_per_user_per_ip", 5),
    failedLoginWindow: duration("failed_login_window", "15m"),
    loginsInFlightPerIp: int("logins_in_flight_per_ip", 2),
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
        failedLoginsPerUserPerIp: limits.failedLoginsPerUserPerIp,
        failedLoginWindowSeconds: Duration.toSeconds(limits.failedLoginWindow),
        loginsInFlightPerIp: limits.loginsInFlightPerIp
      },
      addressing,
      maxGroupMembers: shared.maxGroupMembers
    }))
)

export const layerConfig = Layer.unwrapEffect(Effect.map(httpOptionsConfig, (options) => layer(options)))
