import * as grpc from "@grpc/grpc-js"
import { Cause, Config, Duration, Effect, Exit, FiberId, FiberSet, Option } from "effect"
import type { Scope } from "effect"
import * as Net from "node:net"
import * as FrontDoor from "../net/FrontDoor.js"
import type { Listener } from "../net/FrontDoor.js"
import { somaxconn } from "../net/NodeServer.js"
import { duration, int } from "../config/Settings.js"
import type { UnaryMethod } from "./Client.js"
import type { InternalSecurity } from "./Security.js"
import type { GrpcStatusError } from "./Status.js"
import { methodLabel } from "./Status.js"
import { parentSpanFromTraceparent } from "../tracing/TraceContext.js"

export interface ListenOptions {
  readonly port: number
  readonly host: string
  /** How long in-flight calls may take to finish at shutdown before connections are cut. */
  readonly shutdownTimeout?: Duration.DurationInput
}

/** How an internal gRPC port treats its connections: `internal.*`, shared by PushService and the Logic services. */
export interface InternalListenerOptions {
  /** Connections of the port at once (within the process's budget). */
  readonly maxConnections: number
  /** Connections from one address at once (a Task or gateway fleet needs few each). */
  readonly maxConnectionsPerIp: number
  /** A connection that has not made an admitted call (token, certificate) within this is closed. */
  readonly handshakeTimeout: Duration.Duration
  /** A connection with no call for this long is closed (the caller reconnects when it needs to). */
  readonly idleTimeout: Duration.Duration
  /** Streams open at once on one connection. */
  readonly maxConcurrentStreams: number
}

/** `internal.*` of the ports themselves (their admission is `internal.token`/`tls`/`ip_*`). */
export const internalListenerSettings: Config.Config<InternalListenerOptions> = Config.nested(
  Config.all({
    maxConnections: int("max_connections", 1024),
    maxConnectionsPerIp: int("max_connections_per_ip", 32),
    handshakeTimeout: duration("handshake_timeout", "5s"),
    idleTimeout: duration("idle_timeout", "5m"),
    maxConcurrentStreams: int("max_concurrent_streams", 100)
  }),
  "internal"
)

/**
 * An internal port's guard at the front door: closed to whoever shows no credentials within the
 * handshake timeout. `byPeer`: the server learns who its caller is by `address:port` only (grpc-js),
 * so the door keeps its connections findable that way (`trustPeer`); a server that holds the
 * socket itself (the push port) trusts the socket and needs no such index.
 */
export const internalListener = (name: string, options: InternalListenerOptions, byPeer: boolean) =>
  Effect.map(FrontDoor.FrontDoor, (door) =>
    door.listener({
      name,
      maxConnections: options.maxConnections,
      maxPerAddress: options.maxConnectionsPerIp,
      handshakeTimeoutMs: Duration.toMillis(options.handshakeTimeout),
      // Idle connections are closed by the servers themselves, which see their calls come and go.
      idleTimeoutMs: 0,
      trustedIdleTimeoutMs: 0,
      requiresCredentials: true,
      byPeer
    }))

/**
 * Options of every grpc-js server here. No channelz: nothing serves it, and with it on grpc-js
 * counts every call and message per server and per connection. nghttp2's session memory cap stays
 * on (grpc-js switches it off): with at most `max_concurrent_streams` calls of at most 4 MiB per
 * connection and the front door's caps, a connection that reaches it is one to refuse.
 */
export const serverOptions = (options: InternalListenerOptions): grpc.ServerOptions => ({
  "grpc.enable_channelz": 0,
  "grpc.max_concurrent_streams": options.maxConcurrentStreams,
  "grpc-node.max_session_memory": 32,
  "grpc.max_connection_idle_ms": Duration.toMillis(options.idleTimeout)
})

/**
 * Serves the grpc-js server on a TCP listener of our own, so that the front door sees every
 * connection before HTTP/2 does (grpc-js's connection injector, with the internal credentials);
 * shuts it down when the scope closes; succeeds with the bound port.
 */
export const listen = (
  server: grpc.Server,
  security: InternalSecurity,
  options: ListenOptions,
  listener: Listener
): Effect.Effect<number, Error, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.async<{ readonly tcp: Net.Server; readonly port: number }, Error>((resume) => {
      const injector = server.createConnectionInjector(security.serverCredentials)
      const tcp = Net.createServer((socket) => {
        if (!socket.destroyed) injector.injectConnection(socket)
      })
      listener.guard(tcp)
      const failed = (error: Error) => resume(Effect.fail(error))
      tcp.once("error", failed)
      tcp.listen({ port: options.port, host: options.host, backlog: somaxconn() }, () => {
        tcp.off("error", failed)
        tcp.on("error", () => {})
        resume(Effect.succeed({ tcp, port: (tcp.address() as Net.AddressInfo).port }))
      })
    }),
    ({ tcp }) =>
      shutDown(options.shutdownTimeout, (done) => {
        tcp.close()
        server.tryShutdown(done)
      }, () => server.forceShutdown())
  ).pipe(Effect.map(({ port }) => port))

/**
 * A server's shutdown: `graceful` calls back once the calls in flight have finished; past
 * `timeout` (default 5 s) `force` cuts what is left and the shutdown is over.
 */
export const shutDown = (
  timeout: Duration.DurationInput | undefined,
  graceful: (done: () => void) => void,
  force: () => void
): Effect.Effect<void> =>
  Effect.async<void>((resume) => {
    let over = false
    const finish = () => {
      if (over) return
      over = true
      clearTimeout(timer)
      resume(Effect.void)
    }
    const timer = setTimeout(() => {
      force()
      finish()
    }, Duration.toMillis(timeout ?? "5 seconds"))
    graceful(finish)
  })

export type UnaryBridge<R> = <Req, Res>(
  method: UnaryMethod<Req, Res>,
  handler: (request: Req, call: grpc.ServerUnaryCall<Req, Res>) => Effect.Effect<Res, GrpcStatusError, R>
) => grpc.handleUnaryCall<Req, Res>

/**
 * Turns Effect handlers into grpc-js callbacks with a runtime taken once. A call is admitted by
 * `security` first (address lists, token); then it runs as one fiber inside a span continuing the
 * caller's `traceparent`, and a cancelled call interrupts it.
 */
export const makeUnaryBridge = <R = never>(
  security: InternalSecurity,
  onCompleted: (method: string, status: grpc.status, seconds: number) => void = () => {},
  /** An admitted call's connection (by its peer, `host:port`) has shown its credentials. */
  onAdmitted: (peer: string) => void = () => {}
): Effect.Effect<UnaryBridge<R>, never, Scope.Scope | R> =>
  Effect.map(FiberSet.makeRuntime<R>(), (run) =>
  <Req, Res>(
    method: UnaryMethod<Req, Res>,
    handler: (request: Req, call: grpc.ServerUnaryCall<Req, Res>) => Effect.Effect<Res, GrpcStatusError, R>
  ): grpc.handleUnaryCall<Req, Res> => {
    const spanName = method.path.slice(1)
    const label = methodLabel(method.path)
    const [service, rpc] = spanName.split("/")
    return (call: grpc.ServerUnaryCall<Req, Res>, callback: grpc.sendUnaryData<Res>) => {
      const started = performance.now()
      const refusal = security.admit(call)
      if (refusal !== undefined) {
        callback({ code: refusal.status, details: refusal.message }, null)
        onCompleted(label, refusal.status, (performance.now() - started) / 1000)
        return
      }
      onAdmitted(call.getPeer())
      const header = call.metadata.get("traceparent")[0]
      const parent = parentSpanFromTraceparent(typeof header === "string" ? header : undefined)
      let effect = handler(call.request, call).pipe(
        Effect.tapDefect((cause) => Effect.logError(`${spanName} failed unexpectedly`, cause)),
        Effect.withSpan(spanName, {
          kind: "server",
          captureStackTrace: false,
          attributes: { "rpc.system": "grpc", "rpc.service": service, "rpc.method": rpc }
        })
      )
      if (Option.isSome(parent)) effect = Effect.withParentSpan(effect, parent.value)
      // The fiber succeeds with the call's Exit, so the FiberSet never holds on to a failure.
      const fiber = run(Effect.exit(effect))
      const onCancelled = () => fiber.unsafeInterruptAsFork(FiberId.none)
      call.once("cancelled", onCancelled)
      fiber.addObserver((outcome) => {
        call.off("cancelled", onCancelled)
        const exit = Exit.flatten(outcome)
        let status: grpc.status = grpc.status.OK
        if (Exit.isSuccess(exit)) {
          callback(null, exit.value)
        } else {
          const failure = Cause.failureOption(exit.cause)
          let details: string
          if (Option.isSome(failure)) {
            status = failure.value.status
            details = failure.value.message
          } else if (Cause.isInterruptedOnly(exit.cause)) {
            status = call.cancelled ? grpc.status.CANCELLED : grpc.status.UNAVAILABLE
            details = call.cancelled ? "call cancelled" : "server is shutting down"
          } else {
            status = grpc.status.INTERNAL
            details = "internal error"
          }
          callback({ code: status, details }, null)
        }
        onCompleted(label, status, (performance.now() - started) / 1000)
      })
    }
  })
