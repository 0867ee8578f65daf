import * as grpc from "@grpc/grpc-js"
import { Data } from "effect"
import type { FailureCode } from "../../../domain/Errors.js"
import { failureCodeOfGrpcStatus, failureCodes } from "../../../domain/Errors.js"

/** A gRPC call that ended with a status other than OK. */
export class GrpcStatusError extends Data.TaggedError("GrpcStatusError")<{
  readonly status: grpc.status
  readonly message: string
}> {}

/** Answers a call with this status instead of a response. */
export const grpcFailure = (status: grpc.status, message: string) => new GrpcStatusError({ status, message })

export const statusName = (code: number): string => grpc.status[code] ?? "UNKNOWN"

/** The gRPC status of a failure code (the domain's table). */
export const statusOf = (code: FailureCode): grpc.status => failureCodes[code].grpc

export const failureCodeOf = (status: number): FailureCode => failureCodeOfGrpcStatus(status)

/** "/resonance.logic.v1.ChatService/SendMessage" → "ChatService/SendMessage", the metrics label. */
export const methodLabel = (path: string): string => path.slice(path.lastIndexOf(".") + 1)
