import * as grpc from "@grpc/grpc-js"
import { Context, Effect, Exit, Layer, Option, Runtime } from "effect"
import type { Tracer } from "effect"
import { Metrics } from "../../application/ports/Metrics.js"
import { PushDelivery } from "../../application/PushDelivery.js"
import { PushServiceService } from "../../gen/gateway/v1/push.js"
import type { PushRequest, PushResponse, PushServiceServer } from "../../gen/gateway/v1/push.js"
import { InternalAuth } from "../grpc/Security.js"
import { listen, serverOptions } from "../grpc/Server.js"
import type { ListenOptions } from "../grpc/Server.js"
import { methodLabel, statusName } from "../grpc/Status.js"
import { parentSpanFromTraceparent } from "../grpc/TraceContext.js"

export type PushServerOptions = ListenOptions

/** The running `resonance.gateway.v1.PushService`; `port` is the bound one (useful with port 0). */
export class PushServer extends Context.Tag("resonance/PushServer")<PushServer, { readonly port: number }>() {}

/** The distinct, non-blank usernames of a Push request, in request order. */
export const pushTargets = (usernames: ReadonlyArray<string>): Array<string> => {
  const targets = new Set<string>()
  for (const username of usernames) {
    if (username.trim() !== "") targets.add(username)
  }
  return Array.from(targets)
}

const SPAN_NAME = PushServiceService.push.path.slice(1)
const LABEL = methodLabel(PushServiceService.push.path)

/**
 * Serves PushService.Push for the Task service. The hot path of the fan-out, so the handler is
 * a plain callback: admission, the targets, one encode and the writes (PushDelivery), the
 * counters. No fiber per call; a span only when the caller's trace is sampled.
 */
export const layer = (options: PushServerOptions): Layer.Layer<PushServer, Error, PushDelivery | Metrics | InternalAuth> =>
  Layer.scoped(
    PushServer,
    Effect.gen(function*() {
      const delivery = yield* PushDelivery
      const metrics = yield* Metrics
      const security = yield* InternalAuth
      const tracer = yield* Effect.tracer
      const clock = yield* Effect.clock
      const runFork = Runtime.runFork(yield* Effect.runtime<never>())

      const traced = (call: grpc.ServerUnaryCall<PushRequest, PushResponse>): Tracer.Span | undefined => {
        const header = call.metadata.get("traceparent")[0]
        if (typeof header !== "string") return undefined
        const parent = parentSpanFromTraceparent(header)
        if (Option.isNone(parent) || !parent.value.sampled) return undefined
        const span = tracer.span(SPAN_NAME, parent, Context.empty(), [], clock.unsafeCurrentTimeNanos(), "server")
        span.attribute("rpc.system", "grpc")
        span.attribute("rpc.method", LABEL)
        return span
      }

      const answer = (request: PushRequest): PushResponse | { readonly code: grpc.status; readonly details: string } => {
        const message = request.message
        if (message === undefined) return { code: grpc.status.INVALID_ARGUMENT, details: "message is required" }
        const targets = pushTargets(request.toUsernames)
        // Nobody to reach is nothing failed, as the Go gateway answers.
        if (targets.length === 0) return { msgId: message.msgId, error: "", failedUsernames: [] }
        const report = delivery.deliverNow(targets, message)
        return { msgId: message.msgId, error: "", failedUsernames: report.failedUsernames as Array<string> }
      }

      const push: grpc.handleUnaryCall<PushRequest, PushResponse> = (call, callback) => {
        const started = performance.now()
        const refusal = security.admit(call)
        if (refusal !== undefined) {
          callback({ code: refusal.status, details: refusal.message }, null)
          metrics.grpcRequest(LABEL, statusName(refusal.status), (performance.now() - started) / 1000)
          return
        }
        const span = traced(call)
        let status: grpc.status = grpc.status.OK
        try {
          const outcome = answer(call.request)
          if ("code" in outcome) {
            status = outcome.code
            callback(outcome, null)
          } else {
            span?.attribute("push.failed", outcome.failedUsernames.length)
            callback(null, outcome)
          }
        } catch (error) {
          status = grpc.status.INTERNAL
          callback({ code: status, details: "internal error" }, null)
          runFork(Effect.logError("PushService/Push failed unexpectedly").pipe(Effect.annotateLogs({ error: String(error) })))
        }
        span?.end(clock.unsafeCurrentTimeNanos(), Exit.void)
        metrics.grpcRequest(LABEL, statusName(status), (performance.now() - started) / 1000)
      }

      const server = new grpc.Server(serverOptions)
      const implementation: PushServiceServer = { push }
      server.addService(PushServiceService, implementation)
      const port = yield* listen(server, security, options)
      yield* (security.mode === "refuse-all"
        ? Effect.logWarning(
          "PushService refuses every call: set internal.token (or internal.tls, or internal.insecure for peers that send neither)"
        )
        : Effect.logInfo("push gRPC server listening")).pipe(
          Effect.annotateLogs({ host: options.host, port, auth: security.mode })
        )
      return { port }
    })
  )
