import { Clock, Context, Duration, Effect, ExecutionStrategy, Exit, FiberSet, Layer, Scope, Stream } from "effect"
import type { ConfigError, Subscribable } from "effect"
import { Committed } from "../../application/Committed.js"
import type { LogicShape } from "../../application/ports/Logic.js"
import { Logic, LogicRoutes } from "../../application/ports/Logic.js"
import type { PresenceBatch, PushMessage } from "../../domain/Model.js"
import { serviceSettings } from "../platform/config/Settings.js"
import * as InternalAuth from "../platform/grpc/Security.js"
import type { FrontDoor } from "../platform/net/FrontDoor.js"
import type { PushClient } from "./GatewayPush.js"
import { pushClient } from "./GatewayPush.js"
import { serveLogic } from "./LogicGrpcServer.js"

/** A gateway as service discovery lists it: its id (as in SyncStatus) and its PushService address. */
export interface GatewayInstance {
  readonly id: string
  readonly address: string
}

/** The live gateways, followed as they come and go (etcd's `gateway-service` entries, from the composition). */
export class LiveGateways extends Context.Tag("resonance/ReferenceLogic/LiveGateways")<
  LiveGateways,
  Subscribable.Subscribable<ReadonlyArray<GatewayInstance>>
>() {}

export interface ReferenceLogicOptions {
  readonly port: number
  readonly host: string
  /** Budget of one Push to a gateway. Default 3 s. */
  readonly pushDeadline?: Duration.DurationInput
  /**
   * How long before a UserOnline's timestamp its catch-up starts. Default 2 s: the timestamp is in
   * whole seconds of the gateway's clock, and the official client pulls its inbox just before it
   * opens its socket.
   */
  readonly catchUpMargin?: Duration.DurationInput
}

/** Messages one catch-up pushes at most, and how far back it reaches whatever the event says. */
const catchUpLimit = 500
const catchUpLookbackMillis = 60_000

/** The running reference Logic: its gRPC port. */
export class ReferenceLogic extends Context.Tag("resonance/ReferenceLogic")<ReferenceLogic, { readonly port: number }>() {}

interface GatewayClient {
  readonly address: string
  readonly client: PushClient
  readonly scope: Scope.CloseableScope
}

/**
 * A Logic served over gRPC, doing the Task service's job as well: each message the Logic commits
 * (the `Committed` queue) is pushed with `PushService.Push` to the gateways (`LiveGateways`) that
 * reported its members online through SyncStatus (`LogicRoutes`). A message committed while a
 * user's socket was open but before their online event arrived found no route: so once a
 * SyncStatus gives a user a route, the gateway is pushed what their inbox gained since the socket
 * opened (clients drop repeats by msg_id). Which Logic and which discovery are the composition
 * root's choice.
 */
const make = (options: ReferenceLogicOptions) =>
  Layer.scoped(
    ReferenceLogic,
    Effect.gen(function*() {
      const layerScope = yield* Effect.scope
      const security = yield* InternalAuth.InternalAuth
      const inner = yield* Logic
      const routes = yield* LogicRoutes
      const committed = yield* Committed
      const gateways = yield* LiveGateways
      const clients = new Map<string, GatewayClient>()
      const pushes = yield* FiberSet.make<void>()

      const clientFor = (instance: GatewayInstance) =>
        Effect.gen(function*() {
          const known = clients.get(instance.id)
          if (known !== undefined && known.address === instance.address) return known.client
          if (known !== undefined) yield* Scope.close(known.scope, Exit.void)
          const scope = yield* Scope.fork(layerScope, ExecutionStrategy.sequential)
          const client = yield* Scope.extend(
            pushClient(instance.address, { deadline: options.pushDeadline ?? "3 seconds" }),
            scope
          ).pipe(Effect.provideService(InternalAuth.InternalAuth, security))
          clients.set(instance.id, { address: instance.address, client, scope })
          return client
        })

      // A gateway gone from etcd no longer holds anyone: drop its presence and its client.
      yield* gateways.changes.pipe(
        Stream.runForEach((instances) =>
          Effect.gen(function*() {
            const live = new Set(instances.map((instance) => instance.id))
            for (const [id, known] of clients) {
              if (live.has(id)) continue
              clients.delete(id)
              yield* Scope.close(known.scope, Exit.void)
              yield* Effect.ignore(routes.forgetGateway(id))
              yield* Effect.logInfo("gateway left; its users are offline").pipe(Effect.annotateLogs({ gateway: id }))
            }
          })
        ),
        Effect.forkScoped
      )

      /** One Push to one gateway; false (and a warning) when it did not take it. */
      const pushTo = (
        instances: ReadonlyArray<GatewayInstance>,
        gatewayId: string,
        toUsernames: Array<string>,
        message: PushMessage
      ): Effect.Effect<boolean> => {
        const instance = instances.find((candidate) => candidate.id === gatewayId)
        if (instance === undefined) return Effect.succeed(false)
        return clientFor(instance).pipe(
          Effect.flatMap((client) => client.push({ toUsernames, message })),
          Effect.as(true),
          Effect.catchAll((error) =>
            Effect.as(
              Effect.logWarning("push to a gateway failed; the message waits in the inbox").pipe(
                Effect.annotateLogs({ gateway: gatewayId, code: error.code, error: error.message })
              ),
              false
            )
          )
        )
      }

      const deliver = (recipients: ReadonlyArray<string>, message: PushMessage) =>
        Effect.gen(function*() {
          const where = routes.onlineGateways(recipients)
          const byGateway = new Map<string, Array<string>>()
          for (const [username, gatewayIds] of where) {
            for (const gatewayId of gatewayIds) {
              const users = byGateway.get(gatewayId)
              if (users === undefined) byGateway.set(gatewayId, [username])
              else users.push(username)
            }
          }
          if (byGateway.size === 0) return
          const instances = yield* gateways.get
          yield* Effect.forEach(
            byGateway,
            ([gatewayId, toUsernames]) => pushTo(instances, gatewayId, toUsernames, message),
            { concurrency: "unbounded", discard: true }
          )
        }).pipe(
          Effect.catchAllDefect((defect) => Effect.logWarning("pushing a committed message failed", defect)),
          Effect.withSpan("ReferenceLogic.publish")
        )

      const marginMillis = Duration.toMillis(options.catchUpMargin ?? "2 seconds")
      /** Each user the batch announced gets, in order, what their inbox gained since their socket opened. */
      const catchUp = (batch: PresenceBatch) =>
        Effect.gen(function*() {
          const instances = yield* gateways.get
          const now = yield* Clock.currentTimeMillis
          for (const online of batch.onlineBatch) {
            const sinceMs = Math.max(Number(online.timestamp) * 1000 - marginMillis, now - catchUpLookbackMillis)
            const messages = yield* routes.inboxSince(online.username, sinceMs, catchUpLimit)
            for (const message of messages) {
              if (!(yield* pushTo(instances, batch.gatewayId, [online.username], message))) break
            }
          }
        }).pipe(
          Effect.catchAll((error) => Effect.logWarning("catch-up of users that came online failed", error)),
          Effect.withSpan("ReferenceLogic.catchUp", { attributes: { "presence.online": batch.onlineBatch.length } })
        )

      // Acks do not wait for the fan-out, as with the Task service behind a queue: a fiber per message.
      const runPush = yield* FiberSet.runtime(pushes)<never>()
      yield* committed.consume((recipients, message) => void runPush(deliver(recipients, message)))

      // The catch-up starts once the routes are stored, so a message committed after it is pushed anyway.
      const served: LogicShape = {
        ...inner,
        syncStatus: (batch) =>
          Effect.tap(inner.syncStatus(batch), () =>
            batch.onlineBatch.length === 0 ? Effect.void : Effect.sync(() => void runPush(catchUp(batch))))
      }
      return yield* serveLogic(served, { port: options.port, host: options.host })
    })
  )

/** The reference Logic serving the `Logic` (and `LogicRoutes`) in the environment, pushing what `Committed` gets. */
export const layer = (
  options: ReferenceLogicOptions
): Layer.Layer<ReferenceLogic, Error | ConfigError.ConfigError, Logic | LogicRoutes | Committed | LiveGateways | InternalAuth.InternalAuth | FrontDoor> =>
  make(options)

/** `layer` on `service.grpc_port`, bound to the internal host (`service.grpc_host`, resolved as for the gateway). */
export const layerConfig = Layer.unwrapEffect(
  Effect.map(serviceSettings, (service) =>
    layer({ port: service.grpcPort, host: service.grpcHost }))
)
