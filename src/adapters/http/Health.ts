import * as HttpServerResponse from "@effect/platform/HttpServerResponse"
import { Effect } from "effect"
import type { ReadinessShape } from "../../application/Readiness.js"
import type { RouteSpec } from "./Routes.js"

/**
 * Liveness (always ok while the process serves) and readiness (503 while starting or draining, so
 * load balancers send nothing new). `/health` and `/ready` are the names probes written for the Go
 * gateway call.
 */
export const healthRoutes = (readiness: ReadinessShape): ReadonlyArray<RouteSpec> => {
  const live = Effect.succeed(HttpServerResponse.unsafeJson({ status: "ok" }))
  const ready = Effect.sync(() =>
    readiness.isReady()
      ? HttpServerResponse.unsafeJson({ status: "ready" })
      : HttpServerResponse.unsafeJson({ status: readiness.isDraining() ? "draining" : "starting" }, { status: 503 })
  )
  return [
    ...(["/healthz", "/health"] as const).map((path): RouteSpec => ({ method: "GET", path, handler: live })),
    ...(["/readyz", "/ready"] as const).map((path): RouteSpec => ({ method: "GET", path, handler: ready }))
  ]
}
