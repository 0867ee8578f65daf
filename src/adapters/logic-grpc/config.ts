import { Config, Effect, Layer } from "effect"
import { duration, int, str } from "../platform/config/Settings.js"
import { layerDiscovered } from "./LogicGrpc.js"

/** `logic.*`: the budget of a Logic call, of one attempt in it, and the retries. */
export const logicCallSettings = Config.nested(
  Config.all({ timeout: duration("timeout", "5s"), attemptTimeout: duration("attempt_timeout", "2s"), retries: int("retries", 2) }),
  "logic"
)

/** `logic_service_name`: what the Logic instances register as. */
export const logicServiceNameSetting = str("logic_service_name", "logic-service")

/** The Logic instances service discovery knows of, called within `logic.*`. */
export const layerConfig = Layer.unwrapEffect(
  Effect.map(
    Config.all({ name: logicServiceNameSetting, logic: logicCallSettings }),
    ({ logic, name }) =>
      layerDiscovered(name, { deadline: logic.timeout, attemptTimeout: logic.attemptTimeout, retries: logic.retries })
  )
)
