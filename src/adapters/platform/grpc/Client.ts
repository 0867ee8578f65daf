import * as grpc from "@grpc/grpc-js"
import { Effect } from "effect"
import type { InternalSecurity } from "./Security.js"
import { GrpcStatusError } from "./Status.js"
import { currentTraceHeaders } from "../tracing/TraceContext.js"

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

/** A channel to one internal peer, with the credentials and options `security` prescribes. */
export const internalClient = (
  address: string,
  security: InternalSecurity,
  channelOptions: grpc.ChannelOptions = {}
): grpc.Client =>
  new grpc.Client(normalizeEndpoint(address) ?? address, security.channelCredentials, {
    ...security.channelOptions,
    ...channelOptions
  })

const isServiceError = (error: unknown): error is grpc.ServiceError =>
  typeof error === "object" && error !== null && typeof (error as { code?: unknown }).code === "number"

/** Metadata of an outgoing internal call: the current trace, extra headers and the internal token. */
export const outgoingMetadata = (
  security: InternalSecurity,
  extra: Readonly<Record<string, string>> = {}
): Effect.Effect<grpc.Metadata> =>
  Effect.map(currentTraceHeaders, (trace) => {
    const metadata = new grpc.Metadata()
    for (const key in trace) metadata.set(key, trace[key]!)
    for (const key in extra) metadata.set(key, extra[key]!)
    return security.authorize(metadata)
  })

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
