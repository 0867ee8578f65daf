import * as HttpRouter from "@effect/platform/HttpRouter"
import type { RouteNotFound } from "@effect/platform/HttpServerError"
import * as HttpServerRequest from "@effect/platform/HttpServerRequest"
import * as HttpServerResponse from "@effect/platform/HttpServerResponse"
import * as NodeHttpServerRequest from "@effect/platform-node/NodeHttpServerRequest"
import { Cause, Effect } from "effect"
import type { AuthError } from "../../domain/Errors.js"
import type { Principal } from "../../application/Authenticator.js"
import { tokenFromAuthorization } from "../../domain/Token.js"
import { CurrentRequest, headerOf, pathOf } from "./AccessLog.js"
import type { Format } from "./Connect.js"
import {
  ConnectError,
  connectError,
  errorResponse,
  formatOf,
  fromFailure,
  invalidInt64Field,
  parseJsonObject,
  readBody,
  timeoutOf,
  unsupportedMediaType
} from "./Connect.js"
import type { Limits } from "./Limits.js"
import type { Call, Procedure, Transport } from "./Procedures.js"
import { restRoutes } from "./Procedures.js"

export interface RouteSpec {
  readonly method: "GET" | "POST"
  readonly path: `/${string}`
  /** A login or registration: it costs a password hash. */
  readonly hashes?: boolean
  readonly handler: Effect.Effect<
    HttpServerResponse.HttpServerResponse,
    ConnectError,
    CurrentRequest | HttpServerRequest.HttpServerRequest
  >
}

export interface RoutesOptions {
  readonly procedures: ReadonlyArray<Procedure>
  /** The caller behind a bearer token (`Sessions.authenticate`). */
  readonly authenticate: (token: string | undefined) => Effect.Effect<Principal, AuthError>
  readonly limits: Limits
  readonly maxBodyBytes: number
  /** Routes served next to the procedures (health probes). */
  readonly extra: ReadonlyArray<RouteSpec>
}

const queryObject = (url: string): Record<string, unknown> => {
  const query = url.indexOf("?")
  const object: Record<string, unknown> = {}
  if (query === -1) return object
  for (const [key, value] of new URLSearchParams(url.slice(query + 1))) object[key] = value
  return object
}

/** A procedure's message from a Connect body (JSON or binary), a REST JSON body or a REST query. */
const decodeMessage = (procedure: Procedure, transport: Transport, format: Format, maxBodyBytes: number) =>
  Effect.gen(function*() {
    const request = yield* HttpServerRequest.HttpServerRequest
    let object: Record<string, unknown> | undefined
    let bytes: Uint8Array | undefined
    if (transport === "rest-query") {
      object = queryObject(request.url)
    } else {
      const body = yield* readBody(request, maxBodyBytes)
      if (format === "proto") {
        bytes = body
      } else {
        const parsed = parseJsonObject(body)
        if (parsed instanceof ConnectError) return yield* Effect.fail(parsed)
        object = parsed
      }
    }
    if (object !== undefined) {
      const badInteger = invalidInt64Field(object, procedure.int64Fields)
      if (badInteger !== undefined) return yield* Effect.fail(connectError("invalid_argument", badInteger))
    }
    try {
      return bytes === undefined ? procedure.fromJson(object!) : procedure.fromBinary(bytes)
    } catch (error) {
      const detail = error instanceof Error ? `: ${error.message}` : ""
      return yield* Effect.fail(
        connectError("invalid_argument", bytes === undefined ? `invalid JSON body${detail}` : `invalid protobuf body${detail}`)
      )
    }
  })

/**
 * The route table: each procedure on its Connect path and its REST twin, the extra routes, and the
 * answer to everything else (404, or 405 with `Allow`). The app answers every request: a
 * `ConnectError` becomes its Connect response, a defect a logged `internal`.
 */
export const makeRoutes = (options: RoutesOptions) => {
  const { limits, maxBodyBytes } = options
  const byMethod = new Map(options.procedures.map((procedure) => [procedure.method, procedure]))

  const procedureHandler = (procedure: Procedure, transport: Transport): RouteSpec["handler"] =>
    Effect.gen(function*() {
      const request = yield* HttpServerRequest.HttpServerRequest
      const state = yield* CurrentRequest
      const contentType = headerOf(request, "content-type")
      let format: Format = "json"
      if (transport === "connect") {
        const connectFormat = formatOf(contentType)
        if (connectFormat === undefined) return yield* Effect.fail(unsupportedMediaType(contentType))
        format = connectFormat
      } else if (transport === "rest-body" && contentType !== undefined && formatOf(contentType) !== "json") {
        return yield* Effect.fail(unsupportedMediaType(contentType))
      }

      if (procedure.limitedBy === "ip") {
        yield* limits.perAddress(procedure.path, state.ip, NodeHttpServerRequest.toIncomingMessage(request))
      }
      const headerToken = tokenFromAuthorization(headerOf(request, "authorization"))
      let caller: Principal | undefined
      if (procedure.access === "bearer") {
        caller = yield* Effect.mapError(options.authenticate(headerToken), fromFailure)
        state.username = caller.username
        if (procedure.limitedBy === "user") yield* limits.perUser(caller.username)
      }

      const message = yield* decodeMessage(procedure, transport, format, maxBodyBytes)
      const call: Call = {
        address: state.ip,
        headerToken,
        caller,
        identify: (username) => {
          state.username = username
        }
      }
      const deadline = timeoutOf(headerOf(request, "connect-timeout-ms"))
      const invoked = Effect.mapError(procedure.invoke(message, call), fromFailure)
      const response = yield* (deadline === undefined ? invoked : invoked.pipe(
        Effect.timeoutFail({
          duration: deadline,
          onTimeout: () => connectError("deadline_exceeded", `no answer within ${deadline} ms`)
        })
      )).pipe(
        Effect.annotateLogs({ procedure: procedure.method, ...(caller ? { username: caller.username } : {}) })
      )
      return format === "proto"
        ? HttpServerResponse.uint8Array(procedure.toBinary(response), { contentType: "application/proto" })
        : HttpServerResponse.text(JSON.stringify(procedure.toJson(response)), { contentType: "application/json" })
    })

  const routes: Array<RouteSpec> = [
    ...options.extra,
    ...options.procedures.map((procedure): RouteSpec => ({
      method: "POST",
      path: procedure.path as `/${string}`,
      hashes: procedure.limitedBy === "ip",
      handler: procedureHandler(procedure, "connect")
    })),
    ...restRoutes.map(([method, path, name, transport]): RouteSpec => ({
      method,
      path,
      hashes: byMethod.get(name)!.limitedBy === "ip",
      handler: procedureHandler(byMethod.get(name)!, transport)
    }))
  ]
  const methodsByPath = new Map<string, Array<string>>()
  for (const route of routes) methodsByPath.set(route.path, [...(methodsByPath.get(route.path) ?? []), route.method])

  const router = HttpRouter.fromIterable(routes.map((route) => HttpRouter.makeRoute(route.method, route.path, route.handler)))

  const unrouted = (error: RouteNotFound) => {
    const path = pathOf(error.request.url)
    const methods = methodsByPath.get(path)
    return methods === undefined
      ? connectError("not_found", `no route for ${error.request.method} ${path}`)
      : new ConnectError({
        code: "unimplemented",
        message: `method ${error.request.method} is not allowed here`,
        status: 405,
        headers: { allow: [...methods, "OPTIONS"].join(", ") }
      })
  }

  const app: Effect.Effect<HttpServerResponse.HttpServerResponse, never, CurrentRequest | HttpServerRequest.HttpServerRequest> =
    router.pipe(
      Effect.catchTag("RouteNotFound", (error) => Effect.fail(unrouted(error))),
      Effect.catchTag("ConnectError", (error) => Effect.succeed(errorResponse(error))),
      Effect.catchAllCause((cause) =>
        Cause.isInterruptedOnly(cause) ? Effect.failCause(cause) : Effect.flatMap(CurrentRequest, (state) =>
          Effect.as(
            Effect.logError(`HTTP ${state.route} failed`, cause),
            errorResponse(connectError("internal", "internal error"))
          ))
      )
    )

  const routeOf = (url: string) => {
    const path = pathOf(url)
    return methodsByPath.has(path) ? path : "unmatched"
  }

  // Login and Register, by every path they are served on: each costs a password hash.
  const hashing: ReadonlySet<string> = new Set(routes.filter((route) => route.hashes).map((route) => route.path))
  return { app, routeOf, hashing }
}
