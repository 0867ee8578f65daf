import { Layer } from "effect"
import { Committed } from "../../application/Committed.js"
import { PushDelivery } from "../../application/PushDelivery.js"
import * as LogicEmbedded from "./LogicEmbedded.js"

/**
 * Aliases for src/main.ts and src/gateway-config.ts until they compose `LogicEmbedded.layerConfig`
 * with `Committed.layer` and `PushDelivery.layerCommitted` themselves; then this file goes.
 */
export { accountSettings, embeddedSettings, pageLimitSettings } from "./LogicEmbedded.js"
export const logicEmbeddedOptionsConfig = LogicEmbedded.optionsConfig
/** The embedded Logic with its own queue of committed messages, delivered through PushDelivery. */
export const layerConfig = LogicEmbedded.layerConfig.pipe(
  Layer.provide(PushDelivery.layerCommitted),
  Layer.provide(Committed.layer)
)
