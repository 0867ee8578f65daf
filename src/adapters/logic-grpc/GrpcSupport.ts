import * as grpc from "@grpc/grpc-js"
import { Cause, Data, Duration, Effect, Exit, FiberId, FiberSet, Option } from "effect"
import type { Scope } from "effect"
import type { FailureCode } from "../../domain/Errors.js"
import { parentSpanFromTraceparent } from "../obs/Tracing.js"

/** The parts of a ts-proto generated method definition a unary call needs. */
export interface UnaryMethod<Req, Res> {
  readonly path: string
  readonly requestSerialize: (value: Req) => Buffer
  readonly requestDeserialize: (value: Buffer) => Req
  readonly responseSerialize: (value: Res) => Buffer
  readonly responseDeserialize: (value: Buffer) => Res
}

/** "grpc://10.0.0.5:9000" and " 10.0.0.5:9000 " both name the channel target "10.0.0.5:9000". */
export const normalizeEndpoint = (raw: string): string | undefined => {
  const address = raw.trim().replace(/^grpc:\/\//, "").replace(/\/+$/, "")
  return address === "" ? undefined : address
}

/** "/resonance.logic.v1.ChatService/SendMessage" → "ChatService/SendMessage", the metrics label. */
export const methodLabel = (path: string): string => path.slice(path.lastIndexOf(".") + 1)

export const statusName = (code: number): string => grpc.status[code] ?? "UNKNOWN"

/** Each failure code and its gRPC status, read both ways. */
const statusByCode: Readonly<Record<FailureCode, grpc.status>> = {
  unavailable: grpc.status.UNAVAILABLE,
  deadline_exceeded: grpc.status.DEADLINE_EXCEEDED,
  unauthenticated: grpc.status.UNAUTHENTICATED,
  invalid_argument: grpc.status.INVALID_ARGUMENT,
  not_found: grpc.status.NOT_FOUND,
  already_exists: grpc.status.ALREADY_EXISTS,
  permission_denied: grpc.status.PERMISSION_DENIED,
  resource_exhausted: grpc.status.RESOURCE_EXHAUSTED,
  internal: grpc.status.INTERNAL
}

const codeByStatus = new Map(
  (Object.entries(statusByCode) as Array<[FailureCode, grpc.status]>).map(([code, status]) => [status, code])
)

/** Statuses outside the table (UNKNOWN, CANCELLED, …) are `internal`. */
export const failureCodeOf = (status: number): FailureCode => codeByStatus.get(status) ?? "internal"

export const statusOf = (code: FailureCode): grpc.status => statusByCode[code]

/** A gRPC call that ended with a status other than OK. */
export class GrpcStatusError extends Data.TaggedError("GrpcStatusError")<{
  readonly status: grpc.status
  readonly message: string
}> {}

const isServiceError = (error: unknown): error is grpc.ServiceError =>
  typeof error === "object" && error !== null && typeof (error as { code?: unknown }).code === "number"

export const metadataOf = (headers: Record<string, string>): grpc.Metadata => {
  const metadata = new grpc.Metadata()
  for (const key in headers) metadata.set(key, headers[key]!)
  return metadata
}

/** One unary call on a client's channel; interrupting the Effect cancels the call. */
export const unaryCall = <Req, Res>(
  client: grpc.Client,
  method: UnaryMethod<Req, Res>,
  request: Req,
  metadata: grpc.Metadata,
  deadline: Date
): Effect.Effect<Res, GrpcStatusError> =>
  Effect.async<Res, GrpcStatusError>((resume) => {
    const call = client.makeUnaryRequest(
      method.path,
      method.requestSerialize,
      method.responseDeserialize,
      request,
      metadata,
      { deadline },
      (error, response) => {
        if (error === null && response !== undefined) {
          resume(Effect.succeed(response))
        } else if (isServiceError(error)) {
          resume(Effect.fail(new GrpcStatusError({ status: error.code, message: error.details || error.message })))
        } else {
          resume(Effect.fail(new GrpcStatusError({ status: grpc.status.INTERNAL, message: String(error) })))
        }
      }
    )
    return Effect.sync(() => call.cancel())
  })

export interface ListenOptions {
  readonly port: number
  readonly host?: string
  /** How long in-flight calls may take to finish at shutdown before connections are cut. */
  readonly shutdownTimeout?: Duration.DurationInput
}

const bindAddress = (host: string, port: number) => `${host.includes(":") ? `[${host}]` : host}:${port}`

/** Binds the server and shuts it down when the scope closes; succeeds with the bound port. */
export const listen = (server: grpc.Server, options: ListenOptions): Effect.Effect<number, Error, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.async<number, Error>((resume) => {
      server.bindAsync(
        bindAddress(options.host ?? "0.0.0.0", options.port),
        grpc.ServerCredentials.createInsecure(),
        (error, port) => resume(error === null ? Effect.succeed(port) : Effect.fail(error))
      )
    }),
    () =>
      Effect.async<void>((resume) => {
        let done = false
        const finish = () => {
          if (done) return
          done = true
          clearTimeout(timer)
          resume(Effect.void)
        }
        const timer = setTimeout(() => {
          server.forceShutdown()
          finish()
        }, Duration.toMillis(options.shutdownTimeout ?? "5 seconds"))
        server.tryShutdown(finish)
      })
  )

/** Answers a call with this status instead of a response. */
export const grpcFailure = (status: grpc.status, message: string) => new GrpcStatusError({ status, message })

export type UnaryBridge<R> = <Req, Res>(
  method: UnaryMethod<Req, Res>,
  handler: (request: Req) => Effect.Effect<Res, GrpcStatusError, R>
) => grpc.handleUnaryCall<Req, Res>

/**
 * Turns Effect handlers into grpc-js callbacks with a runtime taken once. Each call runs as one
 * fiber inside a span continuing the caller's `traceparent`; a cancelled call interrupts it.
 */
export const makeUnaryBridge = <R = never>(
  onCompleted: (method: string, status: grpc.status, seconds: number) => void = () => {}
): Effect.Effect<UnaryBridge<R>, never, Scope.Scope | R> =>
  Effect.map(FiberSet.makeRuntime<R>(), (run) =>
  <Req, Res>(
    method: UnaryMethod<Req, Res>,
    handler: (request: Req) => Effect.Effect<Res, GrpcStatusError, R>
  ): grpc.handleUnaryCall<Req, Res> => {
    const spanName = method.path.slice(1)
    const label = methodLabel(method.path)
    const [service, rpc] = spanName.split("/")
    return (call: grpc.ServerUnaryCall<Req, Res>, callback: grpc.sendUnaryData<Res>) => {
      const started = performance.now()
      const header = call.metadata.get("traceparent")[0]
      const parent = parentSpanFromTraceparent(typeof header === "string" ? header : undefined)
      let effect = handler(call.request).pipe(
        Effect.tapDefect((cause) => Effect.logError(`${spanName} failed unexpectedly`, cause)),
        Effect.withSpan(spanName, {
          kind: "server",
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
