import { Duration, Effect } from "effect"
import type { Scope } from "effect"
import { WebSocket } from "ws"
import { scopedInterval } from "../platform/process/Interval.js"
import type { WsClient } from "./WsClient.js"

/** How often the heartbeat wakes: short enough that one wake-up's pings cost well under a millisecond. */
const TICK_MS = 100

/**
 * Pings every client once per `pingInterval` and drops those silent (no pong, no frame) for
 * longer than `pongTimeout`. A ping is a write to the kernel: 10,000 of them at once stall the
 * event loop for tens of milliseconds, and even a thirtieth of them a second (~7 ms) shows in the
 * chat latency. So a cursor walks the clients in equal shares every 100 ms (10,000 sockets at the
 * default 30 s: ~33 pings a wake-up), on a plain timer for the scope's life; the first share at
 * once.
 */
export const forkHeartbeat = (
  clients: ReadonlySet<WsClient>,
  pingInterval: Duration.DurationInput,
  pongTimeout: Duration.DurationInput
): Effect.Effect<void, never, Scope.Scope> => {
  const pingMs = Duration.toMillis(Duration.decode(pingInterval))
  const pongMs = Duration.toMillis(Duration.decode(pongTimeout))
  const ticks = Math.max(1, Math.floor(pingMs / TICK_MS))
  let cursor: Iterator<WsClient> = clients.values()
  const sweep = () => {
    const now = Date.now()
    // A Set's iterator goes on past deletions and sees clients added after it began.
    for (let share = Math.ceil(clients.size / ticks); share > 0; share--) {
      let next = cursor.next()
      if (next.done === true) {
        cursor = clients.values()
        next = cursor.next()
        if (next.done === true) return
      }
      const client = next.value
      if (now - client.lastSeen > pongMs) {
        client.ws.terminate()
      } else if (client.ws.readyState === WebSocket.OPEN) {
        client.ws.ping()
      }
    }
  }
  return scopedInterval("heartbeat", pingMs / ticks, sweep)
}
