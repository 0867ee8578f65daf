import type * as HttpApp from "@effect/platform/HttpApp"
import * as HttpMiddleware from "@effect/platform/HttpMiddleware"
import * as HttpRouter from "@effect/platform/HttpRouter"
import type { RouteNotFound } from "@effect/platform/HttpServerError"
import * as HttpServerRequest from "@effect/platform/HttpServerRequest"
import * as HttpServerResponse from "@effect/platform/HttpServerResponse"
import * as NodeHttpServer from "@effect/platform-node/NodeHttpServer"
import * as NodeHttpServerRequest from "@effect/platform-node/NodeHttpServerRequest"
import { Cause, Clock, Context, Effect, Layer } from "effect"
import { Authenticator } from "../../application/Authenticator.js"
import { makeLoginGuard } from "../../application/LoginGuard.js"
import { Logic } from "../../application/ports/Logic.js"
import { Metrics } from "../../application/ports/Metrics.js"
import { Readiness } from "../../application/Readiness.js"
import { tokenFromAuthorization } from "../../domain/Token.js"
import { defaultSessionRules } from "../../domain/Session.js"
import type { ClientAddressing } from "../platform/net/ClientAddress.js"
import { NodeServer } from "../platform/net/NodeServer.js"
import type { Format } from "./Connect.js"
import {
  ConnectError,
  connectError,
  errorResponse,
  formatOf,
  fromAuthError,
  fromLogicError,
  invalidInt64Field,
  parseJsonObject,
  readBody,
  timeoutOf,
  unsupportedMediaType
} from "./Connect.js"
import { makeCors } from "./Cors.js"
import { gate } from "./Gate.js"
import type { Caller, Procedure } from "./Procedures.js"
import { makeProcedures, restRoutes } from "./Procedures.js"
import type { Transport } from "./Procedures.js"
import { clientKeyOf, makeKeyedRateLimiter } from "../../domain/RateLimit.js"

export interface HttpOptions {
  /** Origins allowed by CORS; `["*"]` allows any (the Origin is echoed back). */
  readonly corsOrigins: ReadonlyArray<string>
  readonly maxBodyBytes: number
  readonly rateLimits: {
    /** Login and Register calls per client IP (each procedure its own bucket); 0 = unlimited. */
    readonly authPerIpPerMinute: number
    /** SessionService calls per user, all methods together; 0 = unlimited. */
    readonly sessionPerUserPerSecond: number
    /** Failed logins of one username from one address within `failedLoginWindow` before that pair is refused; 0 = unlimited. */
    readonly failedLoginsPerUserPerIp?: number
    readonly failedLoginWindowSeconds?: number
    /** Logins and registrations in flight at once from one address; 0 = unlimited. */
    readonly loginsInFlightPerIp?: number
    /** Calls allowed at once above the rate; defaults to one period's worth (a minute, a second). */
    readonly burst?: number
  }
  /** The client's address and whether it may be served, compiled once from `security.*`. */
  readonly addressing: ClientAddressing
  /** Members of a group, its creator included; refused here before Logic is asked. */
  readonly maxGroupMembers?: number
}

/** What one request has learned so far, read back when it is logged and counted. */
interface RequestState {
  readonly route: string
  readonly ip: string
  username: string | undefined
}

class CurrentRequest extends Context.Tag("resonance/http/CurrentRequest")<CurrentRequest, RequestState>() {}


interface RouteSpec {
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

/** API answers are data for one caller: never sniffed as something else, never cached. */
const apiHeaders = { "x-content-type-options": "nosniff", "cache-control": "no-store" }

const pathOf = (url: string): string => {
  const query = url.indexOf("?")
  return query === -1 ? url : url.slice(0, query)
}

const queryObject = (url: string): Record<string, unknown> => {
  const query = url.indexOf("?")
  const object: Record<string, unknown> = {}
  if (query === -1) return object
  for (const [key, value] of new URLSearchParams(url.slice(query + 1))) object[key] = value
  return object
}

const headerOf = (request: HttpServerRequest.HttpServerRequest, name: string): string | undefined => {
  const value = request.headers[name]
  return typeof value === "string" ? value : undefined
}

const build = (options: HttpOptions) =>
  Effect.gen(function*() {
    const logic = yield* Logic
    const authenticator = yield* Authenticator
    const readiness = yield* Readiness
    const metrics = yield* Metrics

    const addressing = options.addressing
    const cors = makeCors(options.corsOrigins)
    const procedures = makeProcedures(logic, authenticator, { sessions: { maxGroupMembers: options.maxGroupMembers ?? defaultSessionRules.maxGroupMembers } })
    const byMethod = new Map(procedures.map((procedure) => [procedure.method, procedure]))

    const { authPerIpPerMinute, sessionPerUserPerSecond, burst } = options.rateLimits
    const logins = makeLoginGuard({
      failuresPerUserAndAddress: options.rateLimits.failedLoginsPerUserPerIp ?? 0,
      failureWindowSeconds: options.rateLimits.failedLoginWindowSeconds ?? 900,
      inFlightPerAddress: options.rateLimits.loginsInFlightPerIp ?? 0
    })
    const ipLimiter = authPerIpPerMinute > 0
      ? makeKeyedRateLimiter({ ratePerSecond: authPerIpPerMinute / 60, burst: burst ?? authPerIpPerMinute })
      : undefined
    const userLimiter = sessionPerUserPerSecond > 0
      ? makeKeyedRateLimiter({
        ratePerSecond: sessionPerUserPerSecond,
        burst: burst ?? Math.max(1, Math.ceil(sessionPerUserPerSecond))
      })
      : undefined

    const tooMany = (retryAfter: number, what: string) =>
      new ConnectError({
        code: "resource_exhausted",
        message: `${what}, retry in ${retryAfter}s`,
        headers: { "retry-after": String(retryAfter) }
      })

    const limit = (limiter: typeof ipLimiter, key: string) =>
      Effect.flatMap(Clock.currentTimeMillis, (now) => {
        const retryAfter = limiter === undefined ? 0 : limiter.take(key, now)
        return retryAfter === 0 ? Effect.void : Effect.fail(tooMany(retryAfter, "rate limit exceeded"))
      })

    /**
     * The per-IP limit refused an address that may stand for many clients: said once per address
     * (the first few hundred), so an operator behind Caddy or Nginx learns about `trusted_proxies`.
     */
    const warnedShared = new Set<string>()
    const warnShared = (request: HttpServerRequest.HttpServerRequest, ip: string) =>
      Effect.suspend(() => {
        if (warnedShared.has(ip) || warnedShared.size >= 256) return Effect.void
        const hint = addressing.sharedAddressHint(NodeHttpServerRequest.toIncomingMessage(request), ip)
        if (hint === undefined) return Effect.void
        warnedShared.add(ip)
        return Effect.logWarning(`login rate limit reached for ${ip}; ${hint}`).pipe(
          Effect.annotateLogs({ client_ip: ip })
        )
      })

    /** Login and Register under the login policy: failures per (username, address), a few at once per address. */
    const guarded = <A>(procedure: Procedure, message: unknown, ip: string, call: Effect.Effect<A, ConnectError>) =>
      procedure.limitedBy !== "ip" ? call : logins.guard(
        procedure.failuresKey?.(message),
        ip,
        call,
        (error) => error.code === "unauthenticated"
      ).pipe(Effect.catchTag("LoginRefused", (refused) => Effect.fail(tooMany(refused.retryAfter, refused.message))))

    const authenticate = (token: string | undefined) =>
      Effect.map(
        Effect.mapError(authenticator.authenticate(token), fromAuthError),
        (principal): Caller => ({ username: principal.username, token: token ?? "" })
      )

    const decodeMessage = (procedure: Procedure, transport: Transport, format: Format) =>
      Effect.gen(function*() {
        const request = yield* HttpServerRequest.HttpServerRequest
        let object: Record<string, unknown> | undefined
        let bytes: Uint8Array | undefined
        if (transport === "rest-query") {
          object = queryObject(request.url)
        } else {
          const body = yield* readBody(NodeHttpServerRequest.toIncomingMessage(request), options.maxBodyBytes)
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
            connectError(
              "invalid_argument",
              bytes === undefined ? `invalid JSON body${detail}` : `invalid protobuf body${detail}`
            )
          )
        }
      })

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
          yield* limit(ipLimiter, `${procedure.path} ${clientKeyOf(state.ip)}`).pipe(
            Effect.tapError(() => warnShared(request, state.ip))
          )
        }
        let caller: Caller | undefined
        const headerToken = tokenFromAuthorization(headerOf(request, "authorization"))
        if (procedure.access === "bearer") {
          caller = yield* authenticate(headerToken)
          state.username = caller.username
          if (procedure.limitedBy === "user") yield* limit(userLimiter, caller.username)
        }

        const message = yield* decodeMessage(procedure, transport, format)
        const invalid = procedure.validate(message)
        if (invalid !== undefined) return yield* Effect.fail(connectError("invalid_argument", invalid))
        if (procedure.access === "token") {
          caller = yield* authenticate(procedure.bodyToken(message) || headerToken)
          state.username = caller.username
        }

        const deadline = timeoutOf(headerOf(request, "connect-timeout-ms"))
        const call = guarded(procedure, message, state.ip, Effect.mapError(procedure.invoke(message, caller), fromLogicError))
        const response = yield* (deadline === undefined ? call : call.pipe(
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

    const live = Effect.succeed(HttpServerResponse.unsafeJson({ status: "ok" }))
    const ready = Effect.sync(() =>
      readiness.isReady()
        ? HttpServerResponse.unsafeJson({ status: "ready" })
        : HttpServerResponse.unsafeJson({ status: readiness.isDraining() ? "draining" : "starting" }, { status: 503 })
    )
    const routes: Array<RouteSpec> = [
      // `/health` and `/ready` are the names probes written for the Go gateway call.
      ...(["/healthz", "/health"] as const).map((path): RouteSpec => ({ method: "GET", path, handler: live })),
      ...(["/readyz", "/ready"] as const).map((path): RouteSpec => ({ method: "GET", path, handler: ready })),
      ...procedures.map((procedure): RouteSpec => ({
        method: "POST",
        path: procedure.path as `/${string}`,
        hashes: procedure.limitedBy === "ip",
        handler: procedureHandler(procedure, "connect")
      })),
      ...restRoutes.map(([method, path, procedure, transport]): RouteSpec => ({
        method,
        path,
        hashes: byMethod.get(procedure)!.limitedBy === "ip",
        handler: procedureHandler(byMethod.get(procedure)!, transport)
      }))
    ]
    const methodsByPath = new Map<string, Array<string>>()
    for (const route of routes) methodsByPath.set(route.path, [...(methodsByPath.get(route.path) ?? []), route.method])

    const router = HttpRouter.fromIterable(
      routes.map((route) => HttpRouter.makeRoute(route.method, route.path, route.handler))
    )

    const unrouted = (error: RouteNotFound) => {
      const methods = methodsByPath.get(pathOf(error.request.url))
      return methods === undefined
        ? connectError("not_found", `no route for ${error.request.method} ${pathOf(error.request.url)}`)
        : new ConnectError({
          code: "unimplemented",
          message: `method ${error.request.method} is not allowed here`,
          status: 405,
          headers: { allow: [...methods, "OPTIONS"].join(", ") }
        })
    }

    const dispatch = (request: HttpServerRequest.HttpServerRequest, state: RequestState) => {
      if (!addressing.ipAllowed(state.ip)) {
        return Effect.fail(connectError("permission_denied", "client address is not allowed"))
      }
      if (request.method === "OPTIONS") {
        return Effect.succeed(HttpServerResponse.empty({ status: 204, headers: cors.preflight }))
      }
      return router.pipe(
        Effect.catchTag("RouteNotFound", (error) => Effect.fail(unrouted(error))),
        Effect.provideService(CurrentRequest, state)
      )
    }

    const routeOf = (url: string) => {
      const path = pathOf(url)
      return methodsByPath.has(path) ? path : "unmatched"
    }

    const app: HttpApp.Default = Effect.gen(function*() {
      const request = yield* HttpServerRequest.HttpServerRequest
      const startedAt = performance.now()
      const incoming = NodeHttpServerRequest.toIncomingMessage(request)
      const state: RequestState = { route: routeOf(request.url), ip: addressing.clientIp(incoming), username: undefined }
      const elapsed = () => (performance.now() - startedAt) / 1000

      const response = yield* dispatch(request, state).pipe(
        Effect.catchTag("ConnectError", (error) => Effect.succeed(errorResponse(error))),
        Effect.catchAllCause((cause) =>
          Cause.isInterruptedOnly(cause) ? Effect.failCause(cause) : Effect.as(
            Effect.logError(`HTTP ${state.route} failed`, cause),
            errorResponse(connectError("internal", "internal error"))
          )
        ),
        Effect.onInterrupt(() => Effect.sync(() => metrics.httpRequest(state.route, 499, elapsed())))
      )
      const withCors = HttpServerResponse.setHeaders(
        HttpServerResponse.setHeaders(response, apiHeaders),
        cors.headers(headerOf(request, "origin"))
      )
      metrics.httpRequest(state.route, withCors.status, elapsed())
      const annotations = {
        route: state.route,
        status: withCors.status,
        client_ip: state.ip,
        ...(state.username === undefined ? {} : { username: state.username })
      }
      yield* Effect.annotateCurrentSpan(annotations)
      const line = `${request.method} ${state.route} ${withCors.status}`
      yield* (withCors.status >= 500 ? Effect.logWarning(line) : Effect.logDebug(line)).pipe(
        Effect.annotateLogs(annotations)
      )
      return withCors
    })

    // Login and Register, by every path they are served on: each costs a password hash.
    const hashing: ReadonlySet<string> = new Set(routes.filter((route) => route.hashes).map((route) => route.path))
    return { app, routeOf, logins, hashing }
  })

/**
 * Serves the HTTP API on the shared Node server: attaches a `request` listener for the life of the
 * layer (the `upgrade` event stays with the WebSocket adapter).
 */
export const layer = (options: HttpOptions): Layer.Layer<never, never, NodeServer | Logic | Authenticator | Readiness | Metrics> =>
  Layer.scopedDiscard(
    Effect.gen(function*() {
      const node = yield* NodeServer
      const { server } = node
      const metrics = yield* Metrics
      const cors = makeCors(options.corsOrigins)
      const { app, routeOf, logins, hashing } = yield* build(options)
      // The platform's tracer names the per-request span; it sits outside the app, in the runtime.
      const handler = yield* NodeHttpServer.makeHandler(app).pipe(
        Effect.provideService(HttpMiddleware.SpanNameGenerator, (request) => `HTTP ${routeOf(request.url)}`)
      )
      const gated = gate(handler, {
        node,
        clientIp: options.addressing.clientIp,
        logins,
        hashing,
        refuse: (request, response, retryAfter, message) => {
          response.writeHead(429, {
            ...apiHeaders,
            ...cors.headers(typeof request.headers.origin === "string" ? request.headers.origin : undefined),
            "content-type": "application/json",
            "retry-after": String(retryAfter)
          })
          response.end(JSON.stringify({ code: "resource_exhausted", message }))
          metrics.httpRequest(routeOf(request.url ?? "/"), 429, 0)
        }
      })
      yield* Effect.acquireRelease(
        Effect.sync(() => server.on("request", gated)),
        () => Effect.sync(() => server.off("request", gated))
      )
    })
  )
