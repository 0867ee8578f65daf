import * as grpc from "@grpc/grpc-js"
import { Cause, Clock, Config, Duration, Effect, Exit, Layer, Option, Schedule, Stream, SubscriptionRef } from "effect"
import type { ConfigError, Scope } from "effect"
import { Logic, sendEach } from "../../application/ports/Logic.js"
import type { LogicShape } from "../../application/ports/Logic.js"
import { Metrics } from "../../application/ports/Metrics.js"
import { ServiceDiscovery } from "../../application/ports/ServiceDiscovery.js"
import type { MetricsShape } from "../../application/ports/Metrics.js"
import { logicError, sendRefusalOf } from "../../domain/Errors.js"
import type { LogicError } from "../../domain/Errors.js"
import { AuthServiceService } from "../../gen/logic/v1/auth.js"
import { ChatServiceService } from "../../gen/logic/v1/chat.js"
import { PresenceServiceService } from "../../gen/logic/v1/presence.js"
import type { UserOffline, UserOnline } from "../../gen/logic/v1/presence.js"
import { SessionServiceService } from "../../gen/logic/v1/session.js"
import { internalClient, normalizeEndpoint, outgoingMetadata, unaryCall } from "../platform/grpc/Client.js"
import type { UnaryMethod } from "../platform/grpc/Client.js"
import type { InternalSecurity } from "../platform/grpc/Security.js"
import * as InternalAuth from "../platform/grpc/Security.js"
import { failureCodeOf, GrpcStatusError, methodLabel, statusName } from "../platform/grpc/Status.js"
import { duration, int, str } from "../platform/config/Settings.js"

export interface LogicGrpcOptions {
  /** `host:port` (or `grpc://host:port`) of every live Logic instance, changing over time. */
  readonly endpoints: Effect.Effect<SubscriptionRef.SubscriptionRef<ReadonlyArray<string>>, never, Scope.Scope>
  /** Budget of one Logic call, retries included. */
  readonly deadline: Duration.DurationInput
  /** Deadline of one attempt within that budget (default: the whole budget). */
  readonly attemptTimeout?: Duration.DurationInput
  /** Extra attempts after UNAVAILABLE (or a timed-out attempt of an idempotent call), each on the next endpoint. */
  readonly retries: number
  /** Pause before the first retry; doubles on each further one, jittered. Default 25 ms. */
  readonly backoff?: Duration.DurationInput
  readonly channelOptions?: grpc.ChannelOptions
}

/**
 * Logic instances sit next to the gateway: a restarted one should be reached within seconds,
 * not after grpc-js's default reconnect backoff of up to two minutes.
 */
export const defaultChannelOptions: grpc.ChannelOptions = {
  // A channel's own subchannels: a fresh channel never shares one (and its backoff) with the channel it replaces.
  "grpc.use_local_subchannel_pool": 1,
  "grpc.initial_reconnect_backoff_ms": 250,
  "grpc.max_reconnect_backoff_ms": 2_000,
  "grpc.keepalive_time_ms": 30_000,
  "grpc.keepalive_timeout_ms": 10_000
}

export type LogicGrpcStaticOptions = Omit<LogicGrpcOptions, "endpoints">

interface Endpoint {
  readonly address: string
  readonly client: grpc.Client
  /** Instances discovery lists at this address (a restarted one may be listed beside its expiring entry). */
  readonly listed: number
}

/**
 * One channel per Logic instance, opened when it appears and closed when it goes. An address
 * announced again (a restarted instance registered beside its old, still unexpired entry) gets a
 * new channel: the old one may be waiting out grpc-js's reconnect backoff, up to 2 s.
 */
class EndpointPool {
  private readonly byAddress = new Map<string, Endpoint>()
  private ring: ReadonlyArray<Endpoint> = []
  private cursor = 0
  private readonly retiring = new Set<grpc.Client>()

  constructor(
    private readonly security: InternalSecurity,
    private readonly channelOptions: grpc.ChannelOptions,
    /** How long a replaced channel stays open: calls already on it may finish (a call's whole budget). */
    private readonly retireAfterMs: number
  ) {}

  update(addresses: ReadonlyArray<string>): {
    readonly added: Array<string>
    readonly removed: Array<string>
    readonly renewed: Array<string>
  } {
    const wanted = new Map<string, number>()
    for (const raw of addresses) {
      const address = normalizeEndpoint(raw)
      if (address !== undefined) wanted.set(address, (wanted.get(address) ?? 0) + 1)
    }
    const added: Array<string> = []
    const removed: Array<string> = []
    const renewed: Array<string> = []
    for (const [address, endpoint] of this.byAddress) {
      if (wanted.has(address)) continue
      this.byAddress.delete(address)
      endpoint.client.close()
      removed.push(address)
    }
    for (const [address, listed] of wanted) {
      const known = this.byAddress.get(address)
      if (known !== undefined && listed <= known.listed) {
        if (listed < known.listed) this.byAddress.set(address, { ...known, listed })
        continue
      }
      if (known === undefined) {
        added.push(address)
      } else {
        this.retire(known.client)
        renewed.push(address)
      }
      const client = internalClient(address, this.security, this.channelOptions)
      this.byAddress.set(address, { address, client, listed })
    }
    this.ring = Array.from(this.byAddress.values())
    return { added, removed, renewed }
  }

  /** Round-robin; skips `avoid` (the endpoint that just failed) when there is another. */
  next(avoid: Endpoint | undefined): Endpoint | undefined {
    const ring = this.ring
    if (ring.length === 0) return undefined
    let endpoint = ring[this.cursor++ % ring.length]!
    if (endpoint === avoid && ring.length > 1) endpoint = ring[this.cursor++ % ring.length]!
    if (this.cursor >= ring.length) this.cursor %= ring.length
    return endpoint
  }

  private retire(client: grpc.Client): void {
    this.retiring.add(client)
    setTimeout(() => {
      if (this.retiring.delete(client)) client.close()
    }, this.retireAfterMs).unref()
  }

  closeAll(): void {
    for (const client of this.retiring) client.close()
    this.retiring.clear()
    for (const endpoint of this.byAddress.values()) endpoint.client.close()
    this.byAddress.clear()
    this.ring = []
  }
}

const noEndpointMessage = "no logic-service instance"

const outcomeOf = (exit: Exit.Exit<unknown, GrpcStatusError>): string =>
  Exit.isSuccess(exit)
    ? "OK"
    : Option.match(Cause.failureOption(exit.cause), { onNone: () => "CANCELLED", onSome: (e) => statusName(e.status) })

const toLogicError = (error: GrpcStatusError): LogicError => logicError(failureCodeOf(error.status), error.message)

/** Whether a failed attempt may be made again: the call was refused, or (when `idempotent`) took too long. */
const retryable = (error: GrpcStatusError, idempotent: boolean) =>
  error.status === grpc.status.UNAVAILABLE || (idempotent && error.status === grpc.status.DEADLINE_EXCEEDED)

/**
 * The pause before each retry: exponential from `backoff`, jittered so gateways that lost the
 * same Logic do not come back in step, `retries` at most. On the Effect clock (TestClock in tests).
 */
export const retrySchedule = (backoff: Duration.DurationInput, retries: number): Schedule.Schedule<unknown, unknown> =>
  Schedule.exponential(backoff).pipe(Schedule.jittered, Schedule.intersect(Schedule.recurs(Math.max(0, retries))))

const make = (
  pool: EndpointPool,
  metrics: MetricsShape,
  security: InternalSecurity,
  options: LogicGrpcStaticOptions
): LogicShape => {
  const deadlineMillis = Duration.toMillis(options.deadline)
  const attemptMillis = Math.min(deadlineMillis, Duration.toMillis(options.attemptTimeout ?? options.deadline))
  const schedule = retrySchedule(options.backoff ?? "25 millis", options.retries)

  /**
   * One call within one overall deadline: each attempt on the next instance, bounded by
   * `attemptTimeout`, retried on the schedule while the failure is retryable and time is left.
   * Calls that are not idempotent (Register, CreateSession) are never sent twice.
   */
  const invoke = <Req, Res>(
    name: string,
    method: UnaryMethod<Req, Res>,
    request: Req,
    idempotent = true
  ): Effect.Effect<Res, LogicError> => {
    const label = methodLabel(method.path)
    return Effect.flatMap(Effect.zip(outgoingMetadata(security), Clock.currentTimeMillis), ([metadata, startedAt]) => {
      const deadlineAt = startedAt + deadlineMillis
      let previous: Endpoint | undefined
      const attempt = Effect.flatMap(Clock.currentTimeMillis, (now) => {
        const endpoint = pool.next(previous)
        previous = endpoint
        if (endpoint === undefined) {
          return Effect.fail(new GrpcStatusError({ status: grpc.status.UNAVAILABLE, message: noEndpointMessage }))
        }
        const started = performance.now()
        return unaryCall(endpoint.client, method, request, metadata, new Date(Math.min(deadlineAt, now + attemptMillis))).pipe(
          Effect.onExit((exit) =>
            Effect.sync(() => metrics.grpcRequest(label, outcomeOf(exit), (performance.now() - started) / 1000))
          )
        )
      })
      return attempt.pipe(
        Effect.retry({
          schedule,
          while: (error) =>
            retryable(error, idempotent) ? Effect.map(Clock.currentTimeMillis, (now) => now < deadlineAt) : Effect.succeed(false)
        }),
        Effect.mapError(toLogicError)
      )
    }).pipe(
      Effect.withSpan(`Logic.${name}`, {
        kind: "client",
        attributes: { "rpc.system": "grpc", "rpc.method": label },
        // Every call's span starts here, so the captured frame says nothing; capturing it costs
        // each chat batch and presence batch an Error (as for the chat and RPC server spans).
        captureStackTrace: false
      })
    )
  }

  const sendMessage: LogicShape["sendMessage"] = (chat, origin) =>
    Effect.flatMap(
      invoke("sendMessage", ChatServiceService.sendMessage, {
        sessionId: chat.sessionId,
        fromUsername: chat.fromUsername,
        toUsername: chat.toUsername,
        content: chat.content,
        type: chat.type,
        timestamp: chat.timestamp,
        idempotencyKey: origin?.idempotencyKey ?? ""
        // Retried only with a key: without one a retry could store the message twice.
      }, origin?.idempotencyKey !== undefined && origin.idempotencyKey !== ""),
      (response) => {
        if (response.error === "") return Effect.succeed({ msgId: response.msgId, seqId: response.seqId })
        return Effect.fail(sendRefusalOf(response.error))
      }
    )

  return {
    sendMessage,
    // Each chat its own RPC within its own budget: the Dispatcher sends them one per call, so a
    // slow or retried chat holds back no other chat's ack.
    sendMessages: sendEach(sendMessage),
    batchesChats: false,
    login: (input) => invoke("login", AuthServiceService.login, { username: input.username, password: input.password }),
    register: (input) =>
      invoke("register", AuthServiceService.register, {
        username: input.username,
        password: input.password,
        nickname: input.nickname
      }, false),
    validateToken: (accessToken) =>
      Effect.flatMap(invoke("validateToken", AuthServiceService.validateToken, { accessToken }), (response) => {
        if (!response.valid) return Effect.fail(logicError("unauthenticated", "invalid or expired token"))
        return Effect.succeed(response.user ?? { username: response.username, nickname: "", avatarUrl: "" })
      }),
    revokeToken: (accessToken) =>
      Effect.flatMap(invoke("revokeToken", AuthServiceService.revokeToken, { accessToken }), (response) =>
        response.revocation === undefined
          ? Effect.fail(logicError("internal", "RevokeToken answered without a revocation"))
          : Effect.succeed(response.revocation)),
    listRevocations: (afterCursor, limit) =>
      invoke("listRevocations", AuthServiceService.listRevocations, { afterCursor, limit }),
    syncStatus: (batch) =>
      Effect.flatMap(
        invoke("syncStatus", PresenceServiceService.syncStatus, {
          seqId: batch.seqId,
          gatewayId: batch.gatewayId,
          onlineBatch: batch.onlineBatch as Array<UserOnline>,
          offlineBatch: batch.offlineBatch as Array<UserOffline>
        }),
        (response) => response.error === "" ? Effect.void : Effect.fail(logicError("invalid_argument", response.error))
      ),
    getSessionList: (username, page) =>
      invoke("getSessionList", SessionServiceService.getSessionList, {
        username,
        limit: page?.limit ?? 0n,
        pageToken: page?.pageToken ?? ""
      }),
    createSession: (input) =>
      Effect.map(
        invoke("createSession", SessionServiceService.createSession, {
          creatorUsername: input.creatorUsername,
          members: input.members as Array<string>,
          name: input.name,
          type: input.type
        }, false),
        (response) => response.sessionId
      ),
    getHistoryMessages: (input) =>
      Effect.map(
        invoke("getHistoryMessages", SessionServiceService.getHistoryMessages, {
          username: input.username,
          sessionId: input.sessionId,
          limit: input.limit,
          beforeSeq: input.beforeSeq
        }),
        (response) => response.messages
      ),
    getContactList: (username) =>
      Effect.map(
        invoke("getContactList", SessionServiceService.getContactList, { username }),
        (response) => response.contacts
      ),
    searchUser: (query) =>
      Effect.map(invoke("searchUser", SessionServiceService.searchUser, { query }), (response) => response.users),
    updateReadPosition: (input) =>
      Effect.map(
        invoke("updateReadPosition", SessionServiceService.updateReadPosition, {
          sessionId: input.sessionId,
          seqId: input.seqId,
          username: input.username
        }),
        (response) => response.unreadCount
      ),
    pullInboxDelta: (input) =>
      invoke("pullInboxDelta", SessionServiceService.pullInboxDelta, {
        username: input.username,
        cursorId: input.cursorId,
        limit: input.limit
      })
  }
}

/**
 * The Logic port over gRPC: calls are balanced round-robin over the live Logic instances,
 * bounded by one deadline, and retried on UNAVAILABLE on the next instance with backoff.
 */
export const layer = (options: LogicGrpcOptions): Layer.Layer<Logic, never, Metrics | InternalAuth.InternalAuth> =>
  Layer.scoped(
    Logic,
    Effect.gen(function*() {
      const metrics = yield* Metrics
      const security = yield* InternalAuth.InternalAuth
      const endpoints = yield* options.endpoints
      const pool = yield* Effect.acquireRelease(
        Effect.sync(() =>
          new EndpointPool(security, { ...defaultChannelOptions, ...options.channelOptions }, Duration.toMillis(options.deadline))
        ),
        (pool) => Effect.sync(() => pool.closeAll())
      )
      const apply = (addresses: ReadonlyArray<string>) =>
        Effect.suspend(() => {
          const { added, removed, renewed } = pool.update(addresses)
          if (added.length === 0 && removed.length === 0 && renewed.length === 0) return Effect.void
          return Effect.logInfo("logic-service endpoints changed").pipe(
            Effect.annotateLogs({ added: added.join(","), removed: removed.join(","), renewed: renewed.join(",") })
          )
        })
      yield* apply(yield* SubscriptionRef.get(endpoints))
      yield* endpoints.changes.pipe(Stream.runForEach(apply), Effect.forkScoped)
      return make(pool, metrics, security, options)
    })
  )

/** A fixed set of Logic instances, for tests and for deployments without etcd. */
export const layerStatic = (
  addresses: ReadonlyArray<string>,
  options: LogicGrpcStaticOptions
): Layer.Layer<Logic, never, Metrics | InternalAuth.InternalAuth> => layer({ ...options, endpoints: SubscriptionRef.make(addresses) })

/** `logic.*`: the budget of a Logic call, of one attempt in it, and the retries. */
export const logicCallSettings = Config.nested(
  Config.all({ timeout: duration("timeout", "5s"), attemptTimeout: duration("attempt_timeout", "2s"), retries: int("retries", 2) }),
  "logic"
)

/** `logic_service_name`: what the Logic instances register as. */
export const logicServiceNameSetting = str("logic_service_name", "logic-service")

/** The instances of `logic_service_name` that service discovery (etcd) knows of, followed as they come and go, called within `logic.*`. */
export const layerConfig: Layer.Layer<Logic, ConfigError.ConfigError, Metrics | InternalAuth.InternalAuth | ServiceDiscovery> = Layer
  .unwrapEffect(
    Effect.gen(function*() {
      const { logic, name } = yield* Config.all({ name: logicServiceNameSetting, logic: logicCallSettings })
      const discovery = yield* ServiceDiscovery
      return layer({
        endpoints: discovery.addresses(name),
        deadline: logic.timeout,
        attemptTimeout: logic.attemptTimeout,
        retries: logic.retries
      })
    })
  )
