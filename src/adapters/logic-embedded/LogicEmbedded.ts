import { Config, Context, Duration, Effect, Layer } from "effect"
import type { Scope } from "effect"
import type { CommittedShape } from "../../application/Committed.js"
import { Committed } from "../../application/Committed.js"
import type { LogicRoutesShape, LogicShape } from "../../application/ports/Logic.js"
import { Logic, LogicRoutes } from "../../application/ports/Logic.js"
import { TokenVerifier } from "../../application/ports/TokenVerifier.js"
import type { TokenVerifierShape } from "../../application/ports/TokenVerifier.js"
import { Metrics } from "../../application/ports/Metrics.js"
import type { LogicError } from "../../domain/Errors.js"
import { MIN_SECRET_BYTES } from "../../domain/Token.js"
import { defaultChatRules } from "../../domain/Packet.js"
import { defaultSessionRules } from "../../domain/Session.js"
import { duration, int, merged, sharedLimitSettings, str } from "../platform/config/Settings.js"
import { makeAccounts } from "./Accounts.js"
import { limitWalFile, makeCheckpointer, scheduleCheckpoints } from "./Checkpointer.js"
import { EmbeddedLogicError, openDatabase } from "./Database.js"
import { makeGroupCommit } from "./GroupCommit.js"
import { makeMessages } from "./Messages.js"
import { makePasswords } from "./Passwords.js"
import { makePresence } from "./Presence.js"
import { makeReads } from "./Reads.js"
import { ROOM_SESSION_ID } from "./Schema.js"
import { makeSessionCache } from "./SessionCache.js"
import { makeSnowflake, MAX_WORKER_ID } from "./Snowflake.js"
import type { StatementCounters } from "./Statements.js"
import { makeCounters, preparer } from "./Statements.js"
import { storageFailure } from "./Storage.js"
import { loadOrCreateSecret } from "./Tokens.js"
import { makeJwt, tokenSettings } from "../platform/auth/Jwt.js"
import { makeWalSync, noWalSync, syncThroughWalSync } from "./WalSync.js"

export { EmbeddedLogicError } from "./Database.js"

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
  /** Least time between two group commits under load (default 2 ms); 0 commits every batch at once. */
  readonly commitIntervalMs?: number
  /** Least time between two WAL checkpoints while writes come in (default 20 ms). */
  readonly checkpointIntervalMs?: number
  /**
   * Whether presence (which gateway holds which user) is written to the file (default true: the
   * reference Logic service, whose restart keeps the routes of live gateways). The gateway in
   * embedded mode keeps it in memory only: the process holding the sockets is this one.
   */
  readonly storePresence?: boolean
}

export interface EmbeddedLogic extends LogicShape, LogicRoutesShape {
  /** SQL executed and rows written so far, for the metrics. */
  readonly counters: Readonly<StatementCounters>
  /** Checks a token this Logic signed, synchronously: the gateway's `TokenVerifier` in embedded mode. */
  readonly checkToken: TokenVerifierShape["verify"]
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
 * The Logic service in-process on SQLite. Each message is handed to `publish` (the `Committed`
 * queue's offer) once durable, which lets the same code back the embedded gateway (PushDelivery
 * takes the queue) and the reference gRPC Logic service (its pusher takes it).
 */
export const makeEmbeddedLogic = (
  options: LogicEmbeddedOptions,
  publish: CommittedShape["offer"],
  /** How long each WAL flush and each checkpoint took (the metrics port's `walFlush`, `walCheckpoint`). */
  observe: { readonly walFlushed?: (seconds: number) => void; readonly checkpointed?: (seconds: number) => void } = {}
): Effect.Effect<EmbeddedLogic, EmbeddedLogicError, Scope.Scope> =>
  Effect.gen(function*() {
    yield* validateOptions(options)
    const inMemory = options.databasePath === ":memory:"
    const db = yield* openDatabase(options.databasePath)
    const wal = inMemory || options.synchronous === "normal"
      ? noWalSync
      : yield* makeWalSync(options.databasePath, { flushed: observe.walFlushed })
    if (wal !== noWalSync) yield* syncThroughWalSync(db)
    const counters = makeCounters()
    const durable = wal.sync.pipe(Effect.catchAll((error) => storageFailure("flushing the WAL", error)))
    const secret = options.secretKey || (yield* Effect.try({
      try: () => loadOrCreateSecret(options.databasePath),
      catch: (cause) =>
        new EmbeddedLogicError({ reason: "Secret", message: `cannot load the token secret: ${String(cause)}`, cause })
    }))

    const jwt = makeJwt(secret, Math.floor(options.tokenTtlSeconds ?? 86_400))
    const prepare = preparer(db, counters)
    const cache = makeSessionCache(prepare)
    const maxMsgId = prepare<[], bigint | null>("SELECT MAX(msg_id) FROM messages", { pluck: true })
    const snowflake = makeSnowflake(options.workerId ?? 0, maxMsgId.get() ?? 0n)
    // The checkpoint schedule needs the group commit (to hold it) and wakes on its commits.
    let wakeCheckpoints = () => {}
    const commit = makeGroupCommit(db, counters, {
      afterCommit: wal.flush,
      onCommit: () => wakeCheckpoints(),
      onRollback: cache.clear,
      minIntervalMs: options.commitIntervalMs ?? 2
    })
    if (!inMemory) {
      limitWalFile(db)
      const checkpoints = yield* scheduleCheckpoints(
        yield* makeCheckpointer(options.databasePath, commit, { checkpointed: observe.checkpointed }),
        counters,
        options.checkpointIntervalMs ?? 20
      )
      wakeCheckpoints = checkpoints.wake
    }
    const passwords = yield* makePasswords({
      cost: options.bcryptRounds ?? 10,
      concurrency: options.hashConcurrency ?? 0,
      queue: options.hashQueue ?? 32
    })

    const accounts = yield* makeAccounts({
      db,
      prepare,
      tokens: jwt,
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
    const presence = yield* makePresence(db, prepare, { store: options.storePresence ?? true }).pipe(Effect.mapError(asStartupError))

    return { ...accounts, ...messages, ...reads, ...presence, counters, checkToken: jwt.check } satisfies EmbeddedLogic
  })

/**
 * The embedded Logic as the `Logic` port (and `LogicRoutes`, for the reference Logic, and the
 * `TokenVerifier` of its own tokens); each
 * message it commits is offered to the `Committed` queue.
 */
export const layer = (
  options: LogicEmbeddedOptions
): Layer.Layer<Logic | LogicRoutes | TokenVerifier, EmbeddedLogicError, Committed | Metrics> =>
  Layer.scopedContext(
    Effect.gen(function*() {
      const committed = yield* Committed
      const metrics = yield* Metrics
      const logic = yield* makeEmbeddedLogic(options, committed.offer, {
        walFlushed: metrics.walFlush,
        checkpointed: metrics.walCheckpoint
      })
      metrics.storage(() => logic.counters)
      // The key is this Logic's: a gateway in the same process checks tokens without asking it.
      return Context.make(Logic, logic).pipe(Context.add(LogicRoutes, logic), Context.add(TokenVerifier, { verify: logic.checkToken }))
    })
  )

/** `embedded.*`: the SQLite file and how durable an ack is. */
export const embeddedSettings = Config.nested(
  Config.all({
    databasePath: str("database_path", "./data/resonance.db"),
    synchronous: Config.literal("full", "normal")("synchronous").pipe(Config.withDefault("full" as const)),
    commitInterval: duration("commit_interval", "2ms"),
    checkpointInterval: duration("checkpoint_interval", "20ms")
  }),
  "embedded"
)

/** `auth.*` of accounts and tokens. */
export const accountSettings = merged(
  tokenSettings,
  Config.nested(
    Config.all({ bcryptCost: int("bcrypt_cost", 10), hashConcurrency: int("hash_concurrency", 0), hashQueue: int("hash_queue", 32) }),
    "auth"
  )
)

/** `limits.*` of the embedded Logic's reads. */
export const pageLimitSettings = Config.nested(
  Config.all({ maxPageBytes: int("max_page_bytes", 1024 * 1024), sessionPageSize: int("session_page_size", 100) }),
  "limits"
)

/** The embedded Logic's options, as the gateway in embedded mode and the reference Logic service read them. */
export const optionsConfig: Config.Config<LogicEmbeddedOptions> = Config.map(
  Config.all({ embedded: embeddedSettings, auth: accountSettings, pages: pageLimitSettings, shared: sharedLimitSettings }),
  ({ auth, embedded, pages, shared }) => ({
    databasePath: embedded.databasePath,
    synchronous: embedded.synchronous,
    commitIntervalMs: Duration.toMillis(embedded.commitInterval),
    checkpointIntervalMs: Math.max(1, Duration.toMillis(embedded.checkpointInterval)),
    secretKey: auth.secretKey,
    tokenTtlSeconds: Duration.toSeconds(auth.tokenTtl),
    bcryptRounds: auth.bcryptCost,
    hashConcurrency: auth.hashConcurrency,
    hashQueue: auth.hashQueue,
    maxContentBytes: shared.maxMessageBytes,
    maxGroupMembers: shared.maxGroupMembers,
    maxPageBytes: pages.maxPageBytes,
    sessionPageSize: pages.sessionPageSize
  })
)

/** `layer` with its options from `embedded.*`, `auth.*` and `limits.*`: the reference Logic service. */
export const layerConfig = Layer.unwrapEffect(Effect.map(optionsConfig, layer))

/** `layerConfig` for the gateway in embedded mode: the same process holds the sockets, so presence stays in memory. */
export const layerConfigInProcess = Layer.unwrapEffect(Effect.map(optionsConfig, (options) => layer({ ...options, storePresence: false })))
