import * as HttpIncomingMessage from "@effect/platform/HttpIncomingMessage"
import type * as HttpServerRequest from "@effect/platform/HttpServerRequest"
import * as HttpServerResponse from "@effect/platform/HttpServerResponse"
import { Data, Effect, Option } from "effect"
import type { AuthError, FailureCode, LogicError } from "../../domain/Errors.js"
import { failureCodeOfAuth, failureCodes } from "../../domain/Errors.js"
import type { LoginRefused } from "../../application/LoginGuard.js"

/** The Connect error codes this adapter answers with. */
export type ConnectCode = FailureCode

/** A request that ends in a Connect error; `status` overrides the code's usual HTTP status. */
export class ConnectError extends Data.TaggedError("ConnectError")<{
  readonly code: ConnectCode
  readonly message: string
  readonly status?: number
  readonly headers?: Readonly<Record<string, string>>
}> {}

export const connectError = (code: ConnectCode, message: string) => new ConnectError({ code, message })

export const httpStatusOf = (code: ConnectCode): number => failureCodes[code].http

/** Connect unary errors are always JSON, whatever the request's format. */
export const errorResponse = (error: ConnectError): HttpServerResponse.HttpServerResponse =>
  HttpServerResponse.text(JSON.stringify({ code: error.code, message: error.message }), {
    status: error.status ?? httpStatusOf(error.code),
    contentType: "application/json",
    ...(error.headers === undefined ? {} : { headers: error.headers })
  })

/** 429 with `Retry-After` in whole seconds. */
export const tooMany = (retryAfter: number, message: string) =>
  new ConnectError({ code: "resource_exhausted", message, headers: { "retry-after": String(retryAfter) } })

const fromAuthError = (error: AuthError): ConnectError =>
  failureCodeOfAuth(error) === "unavailable"
    ? connectError("unavailable", error.message || "authentication is unavailable")
    : new ConnectError({
      code: "unauthenticated",
      message: error.message,
      headers: { "www-authenticate": "Bearer" }
    })

/** How a use case's typed failure is answered. */
export const fromFailure = (error: LogicError | AuthError | LoginRefused): ConnectError => {
  switch (error._tag) {
    case "LogicError":
      return connectError(error.code, error.message)
    case "AuthError":
      return fromAuthError(error)
    case "LoginRefused":
      return tooMany(error.retryAfter, `${error.message}, retry in ${error.retryAfter}s`)
  }
}

export type Format = "json" | "proto"

/** The codec of a Connect unary request, from its Content-Type; undefined when unsupported. */
export const formatOf = (contentType: string | undefined): Format | undefined => {
  if (contentType === undefined) return undefined
  const semicolon = contentType.indexOf(";")
  const mediaType = (semicolon === -1 ? contentType : contentType.slice(0, semicolon)).trim().toLowerCase()
  if (mediaType === "application/json") return "json"
  if (mediaType === "application/proto") return "proto"
  return undefined
}

export const unsupportedMediaType = (contentType: string | undefined) =>
  new ConnectError({
    code: "unimplemented",
    message: `unsupported content-type ${JSON.stringify(contentType ?? "")}: use application/json or application/proto`,
    status: 415,
    headers: { "accept-post": "application/json, application/proto" }
  })

const bodyTooLarge = (maxBytes: number) =>
  new ConnectError({
    code: "resource_exhausted",
    message: `request body is larger than ${maxBytes} bytes`,
    status: 413
  })

const toBytes = (body: ArrayBuffer | Uint8Array): Uint8Array => body instanceof Uint8Array ? body : new Uint8Array(body)

/**
 * Reads the request body, at most `maxBytes` of it (the platform's `MaxBodySize`). A declared
 * Content-Length above the limit is refused before reading, so the 413 reaches the client on a live
 * connection; a body that grows past the limit unannounced costs the client its connection.
 */
export const readBody = (
  request: HttpServerRequest.HttpServerRequest,
  maxBytes: number
): Effect.Effect<Uint8Array, ConnectError> => {
  const declared = request.headers["content-length"]
  if (declared !== undefined && Number(declared) > maxBytes) return Effect.fail(bodyTooLarge(maxBytes))
  return request.arrayBuffer.pipe(
    Effect.map(toBytes),
    HttpIncomingMessage.withMaxBodySize(Option.some(maxBytes)),
    Effect.mapError((error) =>
      error.cause instanceof Error && error.cause.message === "maxBytes exceeded"
        ? bodyTooLarge(maxBytes)
        : connectError("invalid_argument", `could not read the request body: ${error.cause instanceof Error ? error.cause.message : error.reason}`)
    )
  )
}

const utf8 = new TextDecoder("utf-8", { fatal: true })

/**
 * A proto3 JSON request body: an object whose values are scalars or arrays of scalars (no request
 * message of this API has a nested message). The empty body is the empty message.
 */
export const parseJsonObject = (body: Uint8Array): Record<string, unknown> | ConnectError => {
  let parsed: unknown
  try {
    const text = utf8.decode(body)
    if (text.trim() === "") return {}
    parsed = JSON.parse(text)
  } catch {
    return connectError("invalid_argument", "invalid JSON body")
  }
  if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) {
    return connectError("invalid_argument", "invalid JSON body: expected an object")
  }
  for (const [key, value] of Object.entries(parsed)) {
    const scalar = (item: unknown) => item === null || typeof item !== "object"
    if (!(scalar(value) || (Array.isArray(value) && value.every(scalar)))) {
      return connectError("invalid_argument", `invalid JSON body: unexpected value for field ${JSON.stringify(key)}`)
    }
  }
  return parsed as Record<string, unknown>
}

/** Connect-Timeout-Ms: at most 10 digits of milliseconds; anything else is ignored. */
export const timeoutOf = (header: string | undefined): number | undefined =>
  header !== undefined && /^\d{1,10}$/.test(header) ? Number(header) : undefined

const INT64_DIGITS = /^-?\d{1,19}$/

const snakeCase = (camel: string) => camel.replace(/[A-Z]/g, (letter) => `_${letter.toLowerCase()}`)

/**
 * Proto3 JSON int64 fields (`"limit": "200"` or `200`) checked before they reach `BigInt`, which
 * accepts a megabyte of digits and spends the event loop parsing it. The first bad field, or undefined.
 */
export const invalidInt64Field = (object: Record<string, unknown>, fields: ReadonlyArray<string>): string | undefined => {
  for (const field of fields) {
    for (const key of [field, snakeCase(field)]) {
      const value = object[key]
      if (value === undefined || value === null) continue
      const ok = typeof value === "number"
        ? Number.isSafeInteger(value)
        : typeof value === "string" && INT64_DIGITS.test(value)
      if (!ok) return `${snakeCase(field)} must be an integer`
    }
  }
  return undefined
}
