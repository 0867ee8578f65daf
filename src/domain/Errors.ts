import { Data } from "effect"

/** Connect/gRPC-style codes every port speaks, so each adapter maps them once. */
export type FailureCode =
  | "invalid_argument"
  | "unauthenticated"
  | "permission_denied"
  | "not_found"
  | "already_exists"
  | "resource_exhausted"
  | "unavailable"
  | "deadline_exceeded"
  | "internal"

/** A Logic call that did not succeed: a business refusal or an outage. */
export class LogicError extends Data.TaggedError("LogicError")<{
  readonly code: FailureCode
  readonly message: string
}> {}

/** The credential presented by a client is missing, malformed, expired or revoked. */
export class AuthError extends Data.TaggedError("AuthError")<{
  readonly reason: "Missing" | "Invalid" | "Expired" | "Unavailable"
  readonly message: string
}> {}

export const logicError = (code: FailureCode, message: string) => new LogicError({ code, message })
