import * as grpc from "@grpc/grpc-js"
import { Config, Context, Duration, Effect, Exit, Layer, Option, Runtime } from "effect"
import type { ConfigError } from "effect"
import type { Tracer } from "effect"
import { Metrics } from "../../application/ports/Metrics.js"
import { PushDelivery } from "../../application/PushDelivery.js"
import { PushRequest, PushResponse, PushServiceService } from "../../gen/gateway/v1/push.js"
import * as InternalAuth from "../platform/grpc/Security.js"
import { internalListener, internalListenerSettings } from "../platform/grpc/Server.js"
import type { FrontDoor } from "../platform/net/FrontDoor.js"
import { etcdEndpointsSetting, serviceSettings } from "../platform/config/Settings.js"
import type { UnaryCall, UnaryOutcome, UnaryServerOptions } from "../platform/grpc/UnaryServer.js"
import { serveUnary } from "../platform/grpc/UnaryServer.js"
import { methodLabel, statusName } from "../platform/grpc/Status.js"
import { parentSpanFromTraceparent } from "../platform/tracing/TraceContext.js"

export type PushServerOptions = Omit<UnaryServerOptions, "onCompleted" | "onDefect" | "onCutOff">

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

const PATH = PushServiceService.push.path
const SPAN_NAME = PATH.slice(1)
const LABEL = methodLabel(PATH)

type Answer = { readonly response: PushResponse } | { readonly code: grpc.status; readonly details: string }

/**
 * Serves PushService.Push for the Task service. The hot path of the fan-out: served by the
 * unary server on `node:http2` (../grpc/UnaryServer.ts) rather than grpc-js, and the handler is a
 * plain callback: admission, decode, the targets, one encode of the frame and the writes
 * (PushDelivery), one encode of the response, the counters. No fiber per call; a span only when
 * the caller's trace is sampled.
 */
export const layer = (
  options: PushServerOptions
): Layer.Layer<PushServer, Error | ConfigError.ConfigError, PushDelivery | Metrics | InternalAuth.InternalAuth | FrontDoor> =>
  Layer.scoped(
    PushServer,
    Effect.gen(function*() {
      // The port's connections as `internal.*` says, behind the front door.
      const ports = yield* internalListenerSettings
      const listener = yield* internalListener("push", ports, false)
      const delivery = yield* PushDelivery
      const metrics = yield* Metrics
      const security = yield* InternalAuth.InternalAuth
      const tracer = yield* Effect.tracer
      const clock = yield* Effect.clock
      const runFork = Runtime.runFork(yield* Effect.runtime<never>())

      const traced = (call: UnaryCall): Tracer.Span | undefined => {
        const header = call.headers.traceparent
        if (typeof header !== "string") return undefined
        const parent = parentSpanFromTraceparent(header)
        if (Option.isNone(parent) || !parent.value.sampled) return undefined
        const span = tracer.span(SPAN_NAME, parent, Context.empty(), [], clock.unsafeCurrentTimeNanos(), "server")
        span.attribute("rpc.system", "grpc")
        span.attribute("rpc.method", LABEL)
        return span
      }

      const answer = (request: PushRequest): Answer => {
        const message = request.message
        if (message === undefined) return { code: grpc.status.INVALID_ARGUMENT, details: "message is required" }
        const targets = pushTargets(request.toUsernames)
        // Nobody to reach is nothing failed, as the Go gateway answers.
        if (targets.length === 0) return { response: { msgId: message.msgId, error: "", failedUsernames: [] } }
        const report = delivery.deliverNow(targets, message)
        return { response: { msgId: message.msgId, error: "", failedUsernames: report.failedUsernames as Array<string> } }
      }

      const push = (body: Uint8Array, call: UnaryCall): UnaryOutcome => {
        let request: PushRequest
        try {
          request = PushRequest.decode(body)
        } catch {
          return { code: grpc.status.INTERNAL, details: "cannot decode the PushRequest" }
        }
        const span = traced(call)
        const outcome = answer(request)
        if ("code" in outcome) {
          span?.end(clock.unsafeCurrentTimeNanos(), Exit.void)
          return outcome
        }
        span?.attribute("push.failed", outcome.response.failedUsernames.length)
        span?.end(clock.unsafeCurrentTimeNanos(), Exit.void)
        return { response: PushResponse.encode(outcome.response).finish() }
      }

      const port = yield* serveUnary([{ path: PATH, handle: push }], security, {
        maxConcurrentStreams: ports.maxConcurrentStreams,
        idleTimeoutMs: Duration.toMillis(ports.idleTimeout),
        listener,
        ...options,
        onCompleted: (_path, status, seconds) => metrics.grpcRequest(LABEL, statusName(status), seconds),
        onDefect: (_path, error) =>
          runFork(Effect.logError("PushService/Push failed unexpectedly").pipe(Effect.annotateLogs({ error: String(error) }))),
        onCutOff: (address, reason) =>
          runFork(Effect.logWarning("PushService connection cut off").pipe(Effect.annotateLogs({ address, reason })))
      })
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

/** `push.enabled`; unset: on in cluster mode, off in embedded mode. */
export const pushSettings = Config.nested(
  Config.all({ enabled: Config.option(Config.boolean("enabled")).pipe(Config.map(Option.getOrUndefined)) }),
  "push"
)

/**
 * PushService on `service.grpc_port`, bound to the internal host (`service.grpc_host`), when
 * `push.enabled` says so (unset: in cluster mode, where the Task service pushes); nothing otherwise.
 */
export const layerConfig: Layer.Layer<never, Error | ConfigError.ConfigError, PushDelivery | Metrics | InternalAuth.InternalAuth | FrontDoor> =
  Layer.unwrapEffect(
    Effect.map(
      Config.all({ push: pushSettings, service: serviceSettings, endpoints: etcdEndpointsSetting }),
      ({ endpoints, push, service }) =>
        push.enabled ?? endpoints.length > 0
          ? Layer.discard(layer({ port: service.grpcPort, host: service.grpcHost }))
          : Layer.empty
    )
  )
