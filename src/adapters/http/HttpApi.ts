import * as HttpMiddleware from "@effect/platform/HttpMiddleware"
import * as HttpServerRequest from "@effect/platform/HttpServerRequest"
import * as HttpServerResponse from "@effect/platform/HttpServerResponse"
import * as NodeHttpServer from "@effect/platform-node/NodeHttpServer"
import { Config, Effect, Layer } from "effect"
import { Accounts } from "../../application/Accounts.js"
import { Metrics } from "../../application/ports/Metrics.js"
import { Readiness } from "../../application/Readiness.js"
import { Sessions } from "../../application/Sessions.js"
import { duration, int, list, num } from "../platform/config/Settings.js"
import type { ClientAddressing } from "../platform/net/ClientAddress.js"
import { clientAddressingConfig } from "../platform/net/ClientAddress.js"
import * as NodeServer from "../platform/net/NodeServer.js"
import { accessLog, CurrentRequest, headerOf } from "./AccessLog.js"
import { connectError, errorResponse } from "./Connect.js"
import { gate } from "./Gate.js"
import { healthRoutes } from "./Health.js"
import type { RateLimits } from "./Limits.js"
import { makeLimits } from "./Limits.js"
import { makeProcedures } from "./Procedures.js"
import { makeRoutes } from "./Routes.js"

export interface HttpOptions {
  /** Origins allowed by CORS; `["*"]` allows any (the Origin is echoed back). */
  readonly corsOrigins: ReadonlyArray<string>
  readonly maxBodyBytes: number
  readonly rateLimits: RateLimits
  /** The client's address and whether it may be served, compiled once from `security.*`. */
  readonly addressing: ClientAddressing
}

/** `security.cors_origins`. */
export const corsSettings = Config.nested(Config.all({ corsOrigins: list("cors_origins", ["*"]) }), "security")

/**
 * `limits.*` of the HTTP API: its token buckets and places for hashes, which this adapter enforces,
 * and the failed-login policy, which the composition root gives `Accounts`.
 */
export const httpLimitSettings = Config.nested(
  Config.all({
    authPerIpPerMinute: num("auth_per_ip_per_minute", 30),
    failedLoginsPerUserPerIp: num("failed_logins_per_user_per_ip", 5),
    failedLoginWindow: duration("failed_login_window", "15m"),
    loginsInFlightPerIp: int("logins_in_flight_per_ip", 2),
    sessionPerUserPerSecond: num("session_per_user_per_second", 50)
  }),
  "limits"
)

/** The HTTP API's options from `security` and `limits`; a bad address list fails naming its key. */
export const httpOptionsConfig = Effect.flatMap(
  Config.all({ cors: corsSettings, limits: httpLimitSettings }),
  ({ cors, limits }) =>
    Effect.map(clientAddressingConfig, (addressing): HttpOptions => ({
      corsOrigins: cors.corsOrigins,
      maxBodyBytes: 1024 * 1024,
      rateLimits: {
        authPerIpPerMinute: limits.authPerIpPerMinute,
        sessionPerUserPerSecond: limits.sessionPerUserPerSecond,
        loginsInFlightPerIp: limits.loginsInFlightPerIp
      },
      addressing
    }))
)

/** API answers are data for one caller: never sniffed as something else, never cached. */
const apiHeaders = { "x-content-type-options": "nosniff", "cache-control": "no-store", vary: "Origin" }

/** Request headers the official web client (Connect, gRPC-Web) and tracing send. */
const allowedHeaders = [
  "content-type",
  "connect-protocol-version",
  "connect-timeout-ms",
  "connect-accept-encoding",
  "connect-content-encoding",
  "authorization",
  "x-grpc-web",
  "x-user-agent",
  "grpc-timeout",
  "x-request-id",
  "traceparent",
  "tracestate"
]

const exposedHeaders = [
  "retry-after",
  "www-authenticate",
  "grpc-status",
  "grpc-message",
  "grpc-status-details-bin",
  "connect-content-encoding",
  "content-encoding"
]

/**
 * CORS for browser clients through the platform's middleware; `"*"` among the origins allows any
 * (the Origin is echoed back). `headers` is the same answer for a response written before any
 * Effect runs.
 */
const corsOf = (origins: ReadonlyArray<string>) => {
  const anyOrigin = origins.includes("*")
  const listed = new Set(origins)
  const allowed = (origin: string | undefined): origin is string =>
    typeof origin === "string" && origin !== "" && (anyOrigin || listed.has(origin))
  const expose = { "access-control-expose-headers": exposedHeaders.join(",") }
  return {
    middleware: HttpMiddleware.cors({
      allowedOrigins: allowed,
      allowedMethods: ["GET", "POST", "OPTIONS"],
      allowedHeaders,
      exposedHeaders,
      maxAge: 7200
    }),
    headers: (origin: string | undefined): Record<string, string> =>
      allowed(origin) ? { ...expose, "access-control-allow-origin": origin, vary: "Origin" } : expose
  }
}

const originOf = (headers: { readonly origin?: string | ReadonlyArray<string> | undefined }) =>
  typeof headers.origin === "string" ? headers.origin : undefined

/**
 * Serves the HTTP API on the shared Node server: attaches a `request` listener for the life of the
 * layer (the `upgrade` event stays with the WebSocket adapter). Per request: the plain front step
 * (`Gate`), then access log and span, API headers, the address filter, CORS, and the routes.
 */
export const layer = (options: HttpOptions): Layer.Layer<never, never, NodeServer.NodeServer | Accounts | Sessions | Readiness | Metrics> =>
  Layer.scopedDiscard(
    Effect.gen(function*() {
      const node = yield* NodeServer.NodeServer
      const metrics = yield* Metrics
      const sessions = yield* Sessions
      const { addressing } = options
      const cors = corsOf(options.corsOrigins)
      const limits = makeLimits(options.rateLimits, addressing)
      const { app: routes, hashing, routeOf } = makeRoutes({
        procedures: makeProcedures(yield* Accounts, sessions),
        authenticate: sessions.authenticate,
        limits,
        maxBodyBytes: options.maxBodyBytes,
        extra: healthRoutes(yield* Readiness)
      })

      const forbidden = errorResponse(connectError("permission_denied", "client address is not allowed"))
      // Outside CORS, so a denied address is refused its preflight too; the refusal still carries CORS headers.
      const addressFilter = <E, R>(app: Effect.Effect<HttpServerResponse.HttpServerResponse, E, R>) =>
        Effect.flatMap(Effect.all([CurrentRequest, HttpServerRequest.HttpServerRequest]), ([state, request]) =>
          addressing.ipAllowed(state.ip)
            ? app
            : Effect.succeed(HttpServerResponse.setHeaders(forbidden, cors.headers(headerOf(request, "origin")))))
      const app = routes.pipe(
        cors.middleware,
        addressFilter,
        Effect.map((response) => HttpServerResponse.setHeaders(response, apiHeaders)),
        accessLog({ routeOf, clientIp: addressing.clientIp, metrics })
      )
      // The request span is ours (AccessLog): the platform's would treat an unsampled parent as sampled.
      const handler = yield* NodeHttpServer.makeHandler(app).pipe(HttpMiddleware.withTracerDisabledWhenEffect(() => true))
      const gated = gate(handler, {
        node,
        clientIp: addressing.clientIp,
        logins: limits.hashPlaces,
        hashing,
        refuse: (request, response, retryAfter, message) => {
          response.writeHead(429, {
            ...apiHeaders,
            ...cors.headers(originOf(request.headers)),
            "content-type": "application/json",
            "retry-after": String(retryAfter)
          })
          response.end(JSON.stringify({ code: "resource_exhausted", message }))
          metrics.httpRequest(routeOf(request.url ?? "/"), 429, 0)
        }
      })
      yield* Effect.acquireRelease(
        Effect.sync(() => node.server.on("request", gated)),
        () => Effect.sync(() => node.server.off("request", gated))
      )
    })
  )

export const layerConfig = Layer.unwrapEffect(Effect.map(httpOptionsConfig, layer))
