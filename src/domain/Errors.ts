import { Data } from "effect"

/** Connect/gRPC-style codes every port speaks; each adapter maps them through `failureCodes`. */
export type FailureCode =
  | "invalid_argument"
  | "unauthenticated"
  | "permission_denied"
  | "not_found"
  | "already_exists"
  | "resource_exhausted"
  | "unavailable"
  | "deadline_exceeded"
  | "unimplemented"
  | "internal"

/**
 * Each failure code with its HTTP status (Connect protocol) and its gRPC status number, the one
 * table every transport reads (both ways for gRPC).
 */
export const failureCodes: Readonly<Record<FailureCode, { readonly http: number; readonly grpc: number }>> = {
  invalid_argument: { http: 400, grpc: 3 },
  unauthenticated: { http: 401, grpc: 16 },
  permission_denied: { http: 403, grpc: 7 },
  not_found: { http: 404, grpc: 5 },
  already_exists: { http: 409, grpc: 6 },
  resource_exhausted: { http: 429, grpc: 8 },
  unavailable: { http: 503, grpc: 14 },
  deadline_exceeded: { http: 504, grpc: 4 },
  unimplemented: { http: 501, grpc: 12 },
  internal: { http: 500, grpc: 13 }
}

const codeByGrpcStatus = new Map(
  (Object.entries(failureCodes) as Array<[FailureCode, { readonly grpc: number }]>).map(([code, { grpc }]) => [grpc, code])
)

/** A gRPC status number as a failure code; statuses outside the table (UNKNOWN, CANCELLED, …) are `internal`. */
export const failureCodeOfGrpcStatus = (status: number): FailureCode => codeByGrpcStatus.get(status) ?? "internal"

/** A Logic call that did not succeed: a business refusal or an outage. */
export class LogicError extends Data.TaggedError("LogicError")<{
  readonly code: FailureCode
  readonly message: string
}> {}

/** The credential presented by a client is missing, malformed, expired or revoked. */
export class AuthError extends Data.TaggedError("AuthError")<{
  readonly reason: "Missing" | "Invalid" | "Expired" | "Revoked" | "Unavailable"
  readonly message: string
}> {}

export const logicError = (code: FailureCode, message: string) => new LogicError({ code, message })

/** An authentication failure as a failure code: an outage is `unavailable`, any refusal `unauthenticated`. */
export const failureCodeOfAuth = (error: AuthError): FailureCode =>
  error.reason === "Unavailable" ? "unavailable" : "unauthenticated"

/** The business refusal of SendMessage, which a Logic reports in `SendMessageResponse.error`. */
export const NOT_A_MEMBER = "not a session member"

/**
 * Whether a SendMessage failure travels as `SendMessageResponse.error` text rather than as a status,
 * as the Go Logic does: a refused chat, or a sender outside the session.
 */
export const isSendRefusal = (error: Pick<LogicError, "code" | "message">): boolean =>
  error.code === "invalid_argument" || (error.code === "permission_denied" && error.message === NOT_A_MEMBER)

/** The failure a non-empty `SendMessageResponse.error` stands for: the inverse of `isSendRefusal`. */
export const sendRefusalOf = (text: string): LogicError =>
  logicError(text === NOT_A_MEMBER ? "permission_denied" : "invalid_argument", text)

/** What a client reads in the error ack of a chat that failed. */
export const ackErrorText = (error: Pick<LogicError, "code" | "message">): string => error.message || error.code
