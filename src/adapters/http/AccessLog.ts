import type * as HttpApp from "@effect/platform/HttpApp"
import * as HttpServerRequest from "@effect/platform/HttpServerRequest"
import type * as HttpServerResponse from "@effect/platform/HttpServerResponse"
import * as NodeHttpServerRequest from "@effect/platform-node/NodeHttpServerRequest"
import { Context, Effect, Option } from "effect"
import type * as Http from "node:http"
import type { MetricsShape } from "../../application/ports/Metrics.js"
import { parentSpanFromTraceparent } from "../platform/tracing/TraceContext.js"

/** What one request has learned so far, read back when it is logged and counted. */
export interface RequestState {
  /** The route pattern (never the raw URL, which may carry ids), or `unmatched`. */
  readonly route: string
  readonly ip: string
  username: string | undefined
}

export class CurrentRequest extends Context.Tag("resonance/http/CurrentRequest")<CurrentRequest, RequestState>() {}

export interface AccessLogOptions {
  readonly routeOf: (url: string) => string
  /** The proxy-aware client address of a request. */
  readonly clientIp: (request: Http.IncomingMessage) => string
  readonly metrics: MetricsShape
}

export const pathOf = (url: string): string => {
  const query = url.indexOf("?")
  return query === -1 ? url : url.slice(0, query)
}

export const headerOf = (request: HttpServerRequest.HttpServerRequest, name: string): string | undefined => {
  const value = request.headers[name]
  return typeof value === "string" ? value : undefined
}

/**
 * Each request in a server span named after its route, continuing the caller's `traceparent` as
 * the gRPC servers do (an unsampled parent stays unsampled), then counted and logged with what it
 * learned (route, status, client address, user). `app` answers every request; an interrupted one
 * (the client went away) is counted as 499.
 */
export const accessLog = (options: AccessLogOptions) =>
<E>(app: Effect.Effect<HttpServerResponse.HttpServerResponse, E, CurrentRequest | HttpServerRequest.HttpServerRequest>): HttpApp.Default<E> =>
  Effect.flatMap(HttpServerRequest.HttpServerRequest, (request) => {
    const startedAt = performance.now()
    const state: RequestState = {
      route: options.routeOf(request.url),
      ip: options.clientIp(NodeHttpServerRequest.toIncomingMessage(request)),
      username: undefined
    }
    const elapsed = () => (performance.now() - startedAt) / 1000
    const parent = parentSpanFromTraceparent(headerOf(request, "traceparent"))
    return app.pipe(
      Effect.provideService(CurrentRequest, state),
      Effect.onInterrupt(() => Effect.sync(() => options.metrics.httpRequest(state.route, 499, elapsed()))),
      Effect.tap((response) => {
        options.metrics.httpRequest(state.route, response.status, elapsed())
        const annotations = {
          route: state.route,
          status: response.status,
          client_ip: state.ip,
          ...(state.username === undefined ? {} : { username: state.username })
        }
        const line = `${request.method} ${state.route} ${response.status}`
        return Effect.zipRight(
          Effect.annotateCurrentSpan({ ...annotations, "http.response.status_code": response.status }),
          (response.status >= 500 ? Effect.logWarning(line) : Effect.logDebug(line)).pipe(Effect.annotateLogs(annotations))
        )
      }),
      Effect.withSpan(`HTTP ${state.route}`, {
        kind: "server",
        captureStackTrace: false,
        parent: Option.getOrUndefined(parent),
        attributes: { "http.request.method": request.method, "http.route": state.route }
      })
    )
  })
