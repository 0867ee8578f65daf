import * as grpc from "@grpc/grpc-js"
import { Cause, Duration, Effect, Exit, FiberId, FiberSet, Option } from "effect"
import type { Scope } from "effect"
import type { UnaryMethod } from "./Client.js"
import type { InternalSecurity } from "./Security.js"
import type { GrpcStatusError } from "./Status.js"
import { methodLabel } from "./Status.js"
import { parentSpanFromTraceparent } from "./TraceContext.js"

export interface ListenOptions {
  readonly port: number
  readonly host: string
  /** How long in-flight calls may take to finish at shutdown before connections are cut. */
  readonly shutdownTimeout?: Duration.DurationInput
}

/**
 * Options of every gRPC server here. No channelz: nothing serves it, and with it on grpc-js
 * counts every call and message per server and per connection.
 */
export const serverOptions: grpc.ServerOptions = { "grpc.enable_channelz": 0 }

const bindAddress = (host: string, port: number) => `${host.includes(":") ? `[${host}]` : host}:${port}`

/** Binds the server with the internal credentials and shuts it down when the scope closes; succeeds with the bound port. */
export const listen = (
  server: grpc.Server,
  security: InternalSecurity,
  options: ListenOptions
): Effect.Effect<number, Error, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.async<number, Error>((resume) => {
      server.bindAsync(
        bindAddress(options.host, options.port),
        security.serverCredentials,
        (error, port) => resume(error === null ? Effect.succeed(port) : Effect.fail(error))
      )
    }),
    () => shutDown(options.shutdownTimeout, (done) => server.tryShutdown(done), () => server.forceShutdown())
  )

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
  onCompleted: (method: string, status: grpc.status, seconds: number) => void = () => {}
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
