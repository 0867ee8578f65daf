import * as grpc from "@grpc/grpc-js"
import { Context, Data, Duration, Effect, Layer } from "effect"
import type { Scope } from "effect"
import { Metrics } from "../../application/ports/Metrics.js"
import { PushDelivery } from "../../application/PushDelivery.js"
import type { PushDeliveryShape } from "../../application/PushDelivery.js"
import type { FailureCode } from "../../domain/Errors.js"
import { PushServiceService } from "../../gen/gateway/v1/push.js"
import type { PushRequest, PushResponse, PushServiceServer } from "../../gen/gateway/v1/push.js"
import { internalClient, outgoingMetadata, unaryCall } from "../grpc/Client.js"
import { InternalAuth } from "../grpc/Security.js"
import { listen, makeUnaryBridge } from "../grpc/Server.js"
import type { ListenOptions } from "../grpc/Server.js"
import type { GrpcStatusError } from "../grpc/Status.js"
import { failureCodeOf, grpcFailure, statusName } from "../grpc/Status.js"

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

const handlePush = (delivery: PushDeliveryShape) => (request: PushRequest): Effect.Effect<PushResponse, GrpcStatusError> => {
  const message = request.message
  if (message === undefined) {
    return Effect.fail(grpcFailure(grpc.status.INVALID_ARGUMENT, "message is required"))
  }
  const targets = pushTargets(request.toUsernames)
  if (targets.length === 0) {
    return Effect.fail(grpcFailure(grpc.status.INVALID_ARGUMENT, "to_usernames must name at least one user"))
  }
  return Effect.flatMap(delivery.deliver(targets, message), (report) =>
    Effect.as(
      Effect.annotateCurrentSpan({
        "push.msg_id": message.msgId.toString(),
        "push.targets": targets.length,
        "push.failed": report.failedUsernames.length
      }),
      { msgId: message.msgId, error: "", failedUsernames: report.failedUsernames as Array<string> }
    ))
}

/** Serves PushService.Push for the Task service, delivering through PushDelivery. */
export const layer = (options: PushServerOptions): Layer.Layer<PushServer, Error, PushDelivery | Metrics | InternalAuth> =>
  Layer.scoped(
    PushServer,
    Effect.gen(function*() {
      const delivery = yield* PushDelivery
      const metrics = yield* Metrics
      const security = yield* InternalAuth
      const bridge = yield* makeUnaryBridge(security, (method, status, seconds) =>
        metrics.grpcRequest(method, statusName(status), seconds)
      )
      const server = new grpc.Server()
      const implementation: PushServiceServer = { push: bridge(PushServiceService.push, handlePush(delivery)) }
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

/** A Push call that did not return a response. */
export class PushCallError extends Data.TaggedError("PushCallError")<{
  readonly code: FailureCode
  readonly message: string
}> {}

export interface PushClient {
  readonly push: (request: PushRequest) => Effect.Effect<PushResponse, PushCallError>
}

export interface PushClientOptions {
  /** Per call. Default 5 seconds. */
  readonly deadline?: Duration.DurationInput
  readonly channelOptions?: grpc.ChannelOptions
}

/** A client of one gateway's PushService (`host:port` or `grpc://host:port`), closed with the scope. */
export const pushClient = (
  address: string,
  options: PushClientOptions = {}
): Effect.Effect<PushClient, never, Scope.Scope | InternalAuth> =>
  Effect.flatMap(InternalAuth, (security) =>
  Effect.map(
    Effect.acquireRelease(
      Effect.sync(() => internalClient(address, security, options.channelOptions)),
      (client) => Effect.sync(() => client.close())
    ),
    (client): PushClient => {
      const deadlineMillis = Duration.toMillis(options.deadline ?? "5 seconds")
      return {
        push: (request) =>
          Effect.flatMap(outgoingMetadata(security), (metadata) =>
            unaryCall(client, PushServiceService.push, request, metadata, new Date(Date.now() + deadlineMillis))
          ).pipe(
            Effect.mapError((error) => new PushCallError({ code: failureCodeOf(error.status), message: error.message })),
            Effect.withSpan("PushService.Push", {
              kind: "client",
              attributes: { "rpc.system": "grpc", "rpc.method": "PushService/Push" }
            })
          )
      }
    }
  ))
