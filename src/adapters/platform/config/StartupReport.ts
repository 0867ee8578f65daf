import { Effect, Layer } from "effect"
import { etcdEndpointsSetting, isLoopbackHost, serviceSettings } from "./Settings.js"
import type { ConfigReport } from "./GatewayConfig.js"

/**
 * The first lines a process writes: which directory and files its settings came from, and which
 * mode it chose and why. A gateway that silently starts embedded is a support call.
 */
export const layer = (report: ConfigReport): Layer.Layer<never, never> =>
  Layer.effectDiscard(
    Effect.gen(function*() {
      yield* Effect.logInfo("configuration loaded").pipe(
        Effect.annotateLogs({
          directory: report.directory,
          files: report.files.length > 0 ? report.files.join(",") : "(none: defaults and environment)"
        })
      )
      const endpoints = yield* etcdEndpointsSetting
      const service = yield* serviceSettings
      if (endpoints.length === 0) {
        return yield* Effect.logInfo("embedded mode: no etcd.endpoints in the configuration files or environment").pipe(
          Effect.annotateLogs({ hint: "set etcd.endpoints (RESONANCE_ETCD_ENDPOINTS) for cluster mode" })
        )
      }
      yield* Effect.logInfo("cluster mode: etcd.endpoints is set").pipe(
        Effect.annotateLogs({
          from: report.etcdEndpointsFrom ?? "",
          etcd: endpoints.join(","),
          advertised_host: service.advertiseHost,
          grpc_bind: service.grpcHost
        })
      )
      if (isLoopbackHost(service.advertiseHost)) {
        yield* Effect.logWarning(
          "the advertised host is a loopback name: a Task service on another machine cannot push here (set service.host)"
        ).pipe(Effect.annotateLogs({ advertised_host: service.advertiseHost }))
      }
    }).pipe(Effect.orDie)
  )
