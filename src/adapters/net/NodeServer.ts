import { Config, Context, Duration, Effect, Layer } from "effect"
import * as Http from "node:http"
import type { AddressInfo } from "node:net"
import { duration, int, serviceSettings } from "../settings/Settings.js"

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

/** `http.*`: how long a client may take and how many sockets are held at once. */
export const httpServerSettings = Config.nested(
  Config.all({
    headersTimeout: duration("headers_timeout", "10s"),
    requestTimeout: duration("request_timeout", "30s"),
    maxConnections: int("max_connections", 100_000)
  }),
  "http"
)

/** The server's options from `service.http_port`, `service.bind_host` and `http.*`. */
export const nodeServerOptionsConfig: Config.Config<NodeServerOptions> = Config.map(
  Config.all({ service: serviceSettings, http: httpServerSettings }),
  ({ http, service }) => ({
    port: service.httpPort,
    host: service.bindHost,
    headersTimeoutMs: Duration.toMillis(http.headersTimeout),
    requestTimeoutMs: Duration.toMillis(http.requestTimeout),
    maxConnections: http.maxConnections
  })
)

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

  /** The server as `service.*` and `http.*` configure it. */
  static readonly layerConfig = Layer.unwrapEffect(Effect.map(nodeServerOptionsConfig, NodeServer.layer))
}
