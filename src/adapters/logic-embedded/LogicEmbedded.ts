import { Effect, Layer } from "effect"
import type { Scope } from "effect"
import { PushDelivery } from "../../application/PushDelivery.js"
import type { LogicShape } from "../../application/ports/Logic.js"
import { Logic } from "../../application/ports/Logic.js"
import { Metrics } from "../../application/ports/Metrics.js"
import type { LogicError } from "../../domain/Errors.js"
import { MIN_SECRET_BYTES } from "../../domain/Token.js"
import { defaultChatRules } from "../../domain/Packet.js"
import { defaultSessionRules } from "../../domain/Session.js"
import { makeAccounts } from "./Accounts.js"
import { makeCheckpointer, scheduleCheckpoints } from "./Checkpointer.js"
import { EmbeddedLogicError, openDatabase } from "./Database.js"
import { makeGroupCommit } from "./GroupCommit.js"
import type { Publisher } from "./Messages.js"
import { makeMessages } from "./Messages.js"
import { makePasswords } from "./Passwords.js"
import type { PresenceStore } from "./Presence.js"
import { makePresence } from "./Presence.js"
import type { Reads } from "./Reads.js"
import { makeReads } from "./Reads.js"
import { ROOM_SESSION_ID } from "./Schema.js"
import { makeSessionCache } from "./SessionCache.js"
import { makeSnowflake, MAX_WORKER_ID } from "./Snowflake.js"
import type { StatementCounters } from "./Statements.js"
import { makeCounters, preparer } from "./Statements.js"
import { storageFailure } from "./Storage.js"
import { loadOrCreateSecret, makeTokenSigner } from "./Tokens.js"
import { makeWalSync, noWalSync } from "./WalSync.js"

export { EmbeddedLogicError } from "./Database.js"
export type { Publisher } from "./Messages.js"

export interface LogicEmbeddedOptions {
  /** SQLite file; its directory is created when missing. `:memory:` keeps nothing. */
  readonly databasePath: string
  /** HS256 key, at least 32 bytes; when absent or empty one is generated once into `<dir>/jwt-secret`. */
  readonly secretKey?: string
  /** Default 86400 (24 h); fractions are rounded down. */
  readonly tokenTtlSeconds?: number
  /** bcrypt cost, default 10; tests use 4. */
  readonly bcryptRounds?: number
  /** Password hashes at once (0: cores - 1) and waiting for a turn (default 32). */
  readonly hashConcurrency?: number
  readonly hashQueue?: number
  /** Largest chat content in UTF-8 bytes (default 64 KiB). */
  readonly maxContentBytes?: number
  /** Members of a group, its creator included (default 500). */
  readonly maxGroupMembers?: number
  /** Bytes of messages in one history or inbox page, beyond its row limit (default 1 MiB). */
  readonly maxPageBytes?: number
  /** Sessions in one page of the session list (default 100). */
  readonly sessionPageSize?: number
  /** Snowflake worker bits of msg_id, 0..1023. Default 0. */
  readonly workerId?: number
  /**
   * "full" (default): an acknowledged write survives power loss; the WAL is flushed with an
   * fdatasync off the event loop before the ack. "normal": it survives a process crash only.
   */
  readonly synchronous?: "full" | "normal"
  /** Least time between two group commits under load (default 2 ms); 0 commits every turn. */
  readonly commitIntervalMs?: number
  /** Least time between two WAL checkpoints while writes come in (default 20 ms). */
  readonly checkpointIntervalMs?: number
}

export interface EmbeddedLogic
  extends LogicShape, Pick<PresenceStore, "onlineGateways" | "forgetGateway">, Pick<Reads, "inboxSince">
{
  /** SQL executed and rows written so far, for the metrics. */
  readonly counters: Readonly<StatementCounters>
}

const validateOptions = (options: LogicEmbeddedOptions): Effect.Effect<void, EmbeddedLogicError> => {
  const problem = (message: string) => Effect.fail(new EmbeddedLogicError({ reason: "Options", message }))
  const ttl = options.tokenTtlSeconds
  if (ttl !== undefined && !(Number.isFinite(ttl) && ttl >= 1)) return problem("tokenTtlSeconds must be at least 1")
  const rounds = options.bcryptRounds
  if (rounds !== undefined && (!Number.isInteger(rounds) || rounds < 4 || rounds > 31)) {
    return problem("bcryptRounds must be an integer in 4..31")
  }
  const worker = options.workerId
  if (worker !== undefined && (!Number.isInteger(worker) || worker < 0 || worker > MAX_WORKER_ID)) {
    return problem(`workerId must be an integer in 0..${MAX_WORKER_ID}`)
  }
  if (options.synchronous !== undefined && options.synchronous !== "full" && options.synchronous !== "normal") {
    return problem('synchronous must be "full" or "normal"')
  }
  if (options.databasePath.length === 0) return problem("databasePath must not be empty")
  if (options.secretKey !== undefined && options.secretKey !== "" && Buffer.byteLength(options.secretKey) < MIN_SECRET_BYTES) {
    return problem(`secretKey must be at least ${MIN_SECRET_BYTES} bytes`)
  }
  return Effect.void
}

const asStartupError = (error: LogicError) => new EmbeddedLogicError({ reason: "Database", message: error.message })

/**
 * The Logic service in-process on SQLite. Committed messages are handed to `publish` after their
 * acks, which lets the same code back the embedded gateway (PushDelivery) and the reference gRPC
 * Logic service.
 */
export const makeEmbeddedLogic = (
  options: LogicEmbeddedOptions,
  publish: Publisher
): Effect.Effect<EmbeddedLogic, EmbeddedLogicError, Scope.Scope> =>
  Effect.gen(function*() {
    yield* validateOptions(options)
    const inMemory = options.databasePath === ":memory:"
    const db = yield* openDatabase(options.databasePath)
    const wal = inMemory || options.synchronous === "normal" ? noWalSync : yield* makeWalSync(options.databasePath)
    const counters = makeCounters()
    if (!inMemory) {
      yield* scheduleCheckpoints(yield* makeCheckpointer(options.databasePath), counters, options.checkpointIntervalMs ?? 20)
    }
    const durable = wal.sync.pipe(Effect.catchAll((error) => storageFailure("flushing the WAL", error)))
    const secret = options.secretKey || (yield* Effect.try({
      try: () => loadOrCreateSecret(options.databasePath),
      catch: (cause) =>
        new EmbeddedLogicError({ reason: "Secret", message: `cannot load the token secret: ${String(cause)}`, cause })
    }))

    const prepare = preparer(db, counters)
    const cache = makeSessionCache(prepare)
    const maxMsgId = prepare<[], bigint | null>("SELECT MAX(msg_id) FROM messages", { pluck: true })
    const snowflake = makeSnowflake(options.workerId ?? 0, maxMsgId.get() ?? 0n)
    const commit = makeGroupCommit(db, counters, {
      afterCommit: wal.flush,
      onRollback: cache.clear,
      minIntervalMs: options.commitIntervalMs ?? 2
    })
    const passwords = yield* makePasswords({
      cost: options.bcryptRounds ?? 10,
      concurrency: options.hashConcurrency ?? 0,
      queue: options.hashQueue ?? 32
    })

    const accounts = yield* makeAccounts({
      db,
      prepare,
      tokens: makeTokenSigner(secret, Math.floor(options.tokenTtlSeconds ?? 86_400)),
      passwords,
      durable,
      joinedRoom: (user, joinedSeq) => cache.joined(ROOM_SESSION_ID, { ...user, avatarUrl: "", joinedSeq })
    }).pipe(Effect.mapError(asStartupError))
    const messages = yield* makeMessages({
      db,
      prepare,
      cache,
      snowflake,
      commit,
      durable,
      publish,
      chatRules: { maxContentBytes: options.maxContentBytes ?? defaultChatRules.maxContentBytes },
      sessionRules: { maxGroupMembers: options.maxGroupMembers ?? defaultSessionRules.maxGroupMembers }
    }).pipe(Effect.mapError(asStartupError))
    const reads = yield* makeReads({
      db,
      prepare,
      cache,
      maxPageBytes: options.maxPageBytes ?? 1024 * 1024,
      sessionPageSize: options.sessionPageSize ?? 100
    }).pipe(Effect.mapError(asStartupError))
    const presence = yield* makePresence(db, prepare).pipe(Effect.mapError(asStartupError))

    return { ...accounts, ...messages, ...reads, ...presence, counters } satisfies EmbeddedLogic
  })

/** The embedded Logic as the `Logic` port; committed messages are delivered through PushDelivery. */
export const layer = (options: LogicEmbeddedOptions): Layer.Layer<Logic, EmbeddedLogicError, PushDelivery | Metrics> =>
  Layer.scoped(
    Logic,
    Effect.gen(function*() {
      const delivery = yield* PushDelivery
      const metrics = yield* Metrics
      const logic = yield* makeEmbeddedLogic(options, (recipients, message, origin) => {
        delivery.deliverNow(
          recipients,
          message,
          origin?.connectionId === undefined ? undefined : { excludeConnectionId: origin.connectionId }
        )
      })
      metrics.storage(() => logic.counters)
      return logic
    })
  )
