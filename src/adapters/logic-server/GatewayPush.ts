import type * as grpc from "@grpc/grpc-js"
import { Data, Duration, Effect } from "effect"
import type { Scope } from "effect"
import type { FailureCode } from "../../domain/Errors.js"
import { PushServiceService } from "../../gen/gateway/v1/push.js"
import type { PushRequest, PushResponse } from "../../gen/gateway/v1/push.js"
import { internalClient, outgoingMetadata, unaryCall } from "../platform/grpc/Client.js"
import * as InternalAuth from "../platform/grpc/Security.js"
import { failureCodeOf } from "../platform/grpc/Status.js"

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
): Effect.Effect<PushClient, never, Scope.Scope | InternalAuth.InternalAuth> =>
  Effect.flatMap(InternalAuth.InternalAuth, (security) =>
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
              unaryCall(client, PushServiceService.push, request, metadata, new Date(Date.now() + deadlineMillis))).pipe(
                Effect.mapError((error) => new PushCallError({ code: failureCodeOf(error.status), message: error.message })),
                Effect.withSpan("PushService.Push", {
                  kind: "client",
                  attributes: { "rpc.system": "grpc", "rpc.method": "PushService/Push" }
                })
              )
        }
      }
    ))
