import { Config, Effect, Layer } from "effect"
import { Accounts } from "../../application/Accounts.js"
import { Sessions } from "../../application/Sessions.js"
import { sharedLimitSettings } from "../platform/config/Settings.js"
import * as HttpApi from "./HttpApi.js"

/**
 * A bridge until the composition root (`src/Gateway.ts`) builds the use cases: today's `main.ts`
 * gets the HTTP entry point with the `Accounts` and `Sessions` it serves, their options read from
 * the same keys. Delete with main's rewrite; import `./HttpApi.js` instead.
 */
export { corsSettings, httpLimitSettings, httpOptionsConfig } from "./HttpApi.js"

/** The options are read before anything is built, so a bad key fails first. */
export const layerConfig = Layer.unwrapEffect(Effect.map(
  Config.all({ limits: HttpApi.httpLimitSettings, shared: sharedLimitSettings }).pipe(
    Effect.zip(HttpApi.httpOptionsConfig)
  ),
  ([{ limits, shared }, options]) =>
    HttpApi.layer(options).pipe(
      Layer.provide(Layer.merge(
        Accounts.layer({ failuresPerUserAndAddress: limits.failedLoginsPerUserPerIp, failureWindow: limits.failedLoginWindow }),
        Sessions.layer({ maxGroupMembers: shared.maxGroupMembers })
      ))
    )
))
