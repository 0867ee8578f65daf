import { Deferred, Duration, Effect } from "effect"
import { CloseCodes } from "../../domain/Connection.js"
import type { WsClient } from "./WsClient.js"

export interface DrainOptions {
  /** Seconds over which clients are closed, so they do not all reconnect at once. */
  readonly drainSeconds: number
  readonly closeMode: "reconnect" | "clean"
}

/**
 * Closes every client, spread over `drainSeconds`: each first answers the frames it already took,
 * then is closed with 1012 (`clean`) or cut without a close frame (`reconnect`). Waits a bounded
 * time for `allClosed` (completed by the gateway when the last client is gone), then cuts the rest.
 */
export const drainClients = (
  clients: ReadonlySet<WsClient>,
  allClosed: Deferred.Deferred<void>,
  options: DrainOptions
): Effect.Effect<void> =>
  Effect.gen(function*() {
    const snapshot = [...clients]
    const spreadMs = Math.max(0, options.drainSeconds * 1000)
    yield* Effect.forEach(
      snapshot,
      (client, index) =>
        Effect.sleep(Duration.millis(snapshot.length > 1 ? (spreadMs * index) / snapshot.length : 0)).pipe(
          Effect.zipRight(client.session?.drain("2 seconds") ?? Effect.void),
          Effect.zipRight(Effect.sync(() =>
            options.closeMode === "clean"
              ? client.close(CloseCodes.ServiceRestart, "service restart")
              : client.ws.terminate()
          ))
        ),
      { concurrency: "unbounded", discard: true }
    )
    // Bounded so that spread + drain + close stay inside shutdown.timeout_seconds.
    yield* Deferred.await(allClosed).pipe(Effect.timeout("3 seconds"), Effect.ignore)
    for (const client of clients) client.ws.terminate()
  })
