import { Config, Effect, Layer } from "effect"
import { clientAddressingConfig } from "../platform/net/ClientAddress.js"
import { bool, duration, int, num, str } from "../platform/config/Settings.js"
import type { WebSocketOptions } from "./WebSocketGateway.js"
import { layer } from "./WebSocketGateway.js"

/** `ws_config.*` that the socket server reads (`max_pending_bytes` belongs to the Dispatcher). */
export const wsSocketSettings = Config.nested(
  Config.all({
    path: str("path", "/ws"),
    maxMessageSize: int("max_message_size", 1024 * 1024),
    pingInterval: duration("ping_interval", "30s"),
    pongTimeout: duration("pong_timeout", "60s"),
    sendBufferLimit: int("send_buffer_limit", 4 * 1024 * 1024),
    compression: Config.nested(
      Config.all({
        enabled: bool("enabled", false),
        threshold: int("threshold", 1024),
        concurrencyLimit: int("concurrency_limit", 4)
      }),
      "compression"
    )
  }),
  "ws_config"
)

/** `limits.*` checked before an upgrade. */
export const wsLimitSettings = Config.nested(
  Config.all({
    maxConnections: int("max_connections", 0),
    maxConnectionsPerIp: int("max_connections_per_ip", 100),
    maxDevicesPerUser: int("max_devices_per_user", 5)
  }),
  "limits"
)

/** `shutdown.*` of the WebSocket drain. */
export const wsDrainSettings = Config.nested(
  Config.all({
    drainSeconds: num("drain_seconds", 3),
    closeMode: Config.literal("reconnect", "clean")("close_mode").pipe(Config.withDefault("reconnect" as const))
  }),
  "shutdown"
)

/** The WebSocket options from `ws_config`, `limits`, `shutdown` and `security`; a bad address list fails naming its key. */
export const wsOptionsConfig = Effect.flatMap(
  Config.all({ ws: wsSocketSettings, limits: wsLimitSettings, shutdown: wsDrainSettings }),
  ({ limits, shutdown, ws }) =>
    Effect.map(clientAddressingConfig, (addressing): WebSocketOptions => ({
      ...ws,
      ...limits,
      ...shutdown,
      clientIp: addressing.clientIp,
      ipAllowed: addressing.ipAllowed
    }))
)

export const layerConfig = Layer.unwrapEffect(Effect.map(wsOptionsConfig, (options) => layer(options)))
