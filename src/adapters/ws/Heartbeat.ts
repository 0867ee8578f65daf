import { Duration, Effect, Schedule } from "effect"
import type { Scope } from "effect"
import { WebSocket } from "ws"
import type { WsClient } from "./WsClient.js"

/**
 * Pings every client once per `pingInterval` and drops those silent (no pong, no frame) for
 * longer than `pongTimeout`. Pinging every socket at once stalls the event loop for tens of
 * milliseconds per 10,000 sockets, so each interval is cut into slices (one a second) that visit a
 * share each. Forked into the scope.
 */
export const forkHeartbeat = (
  clients: ReadonlySet<WsClient>,
  pingInterval: Duration.DurationInput,
  pongTimeout: Duration.DurationInput
): Effect.Effect<void, never, Scope.Scope> => {
  const pingMs = Duration.toMillis(Duration.decode(pingInterval))
  const pongMs = Duration.toMillis(Duration.decode(pongTimeout))
  const slices = Math.min(30, Math.max(1, Math.floor(pingMs / 1000)))
  let slice = 0
  const sweep = Effect.sync(() => {
    const now = Date.now()
    slice = (slice + 1) % slices
    for (const client of clients) {
      if (client.info.id % slices !== slice) continue
      if (now - client.lastSeen > pongMs) {
        client.ws.terminate()
      } else if (client.ws.readyState === WebSocket.OPEN) {
        client.ws.ping()
      }
    }
  })
  return Effect.asVoid(Effect.forkScoped(Effect.repeat(sweep, Schedule.spaced(Duration.millis(pingMs / slices)))))
}
