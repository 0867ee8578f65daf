import { Context, Effect, Layer } from "effect"
import * as Http from "node:http"
import type { AddressInfo } from "node:net"

export interface NodeServerOptions {
  readonly port: number
  readonly host?: string
  /** A client must send its request headers within this (slowloris); default 10 s. */
  readonly headersTimeoutMs?: number
  /** ... and the whole request within this; default 30 s. WebSockets are not affected once upgraded. */
  readonly requestTimeoutMs?: number
  /** Sockets held at once, WebSockets included; beyond it new connections are closed. Default 100,000. */
  readonly maxConnections?: number
}

/**
 * The one Node HTTP server of the gateway. The HTTP adapter attaches its `request` handler and
 * the WebSocket adapter owns the `upgrade` event, so neither needs the other.
 */
export class NodeServer extends Context.Tag("resonance/NodeServer")<
  NodeServer,
  { readonly server: Http.Server; readonly port: number; readonly host: string }
>() {
  static readonly layer = (options: NodeServerOptions) =>
    Layer.scoped(
      NodeServer,
      Effect.acquireRelease(
        Effect.async<{ server: Http.Server; port: number; host: string }, Error>((resume) => {
          const server = Http.createServer({
            headersTimeout: options.headersTimeoutMs ?? 10_000,
            requestTimeout: options.requestTimeoutMs ?? 30_000,
            // Node checks those timeouts every 30 s by default, which would triple them.
            connectionsCheckingInterval: 1_000
          })
          server.maxConnections = options.maxConnections ?? 100_000
          // Keep-alive sockets outliving a response must not hold shutdown hostage.
          server.keepAliveTimeout = 5_000
          const onError = (error: Error) => resume(Effect.fail(error))
          server.once("error", onError)
          // A connect storm overflows Node's default accept queue of 511 and costs clients SYN retries.
          server.listen({ port: options.port, host: options.host ?? "0.0.0.0", backlog: 4096 }, () => {
            server.off("error", onError)
            const address = server.address() as AddressInfo
            resume(Effect.succeed({ server, port: address.port, host: options.host ?? "0.0.0.0" }))
          })
        }),
        ({ server }) =>
          Effect.async<void>((resume) => {
            server.close(() => resume(Effect.void))
            server.closeIdleConnections()
            setTimeout(() => server.closeAllConnections(), 1_000).unref()
          })
      ).pipe(Effect.orDie)
    )
}
