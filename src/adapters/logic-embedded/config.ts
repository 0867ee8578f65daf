import { Config, Duration, Either, Effect, Layer, Option } from "effect"
import { MIN_SECRET_BYTES } from "../../domain/Token.js"
import { duration, int, invalidData, sharedLimitSettings, str } from "../platform/config/Settings.js"
import type { LogicEmbeddedOptions } from "./LogicEmbedded.js"
import { layer } from "./LogicEmbedded.js"

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
export const accountSettings = Config.nested(
  Config.all({
    secretKey: Config.option(Config.string("secret_key")).pipe(
      Config.map((value) => Option.getOrUndefined(Option.filter(value, (s) => s !== ""))),
      Config.mapOrFail((secret) =>
        secret !== undefined && Buffer.byteLength(secret) < MIN_SECRET_BYTES
          ? Either.left(invalidData(
            ["secret_key"],
            `must be at least ${MIN_SECRET_BYTES} bytes (it signs every token); leave it unset to have one generated`
          ))
          : Either.right(secret)
      )
    ),
    tokenTtl: duration("token_ttl", "24h"),
    bcryptCost: int("bcrypt_cost", 10),
    hashConcurrency: int("hash_concurrency", 0),
    hashQueue: int("hash_queue", 32)
  }),
  "auth"
)

/** `limits.*` of the embedded Logic's reads. */
export const pageLimitSettings = Config.nested(
  Config.all({ maxPageBytes: int("max_page_bytes", 1024 * 1024), sessionPageSize: int("session_page_size", 100) }),
  "limits"
)

/**
 * The embedded Logic's options: one reading for both composition roots, the gateway in embedded
 * mode and the reference Logic service.
 */
export const logicEmbeddedOptionsConfig: Config.Config<LogicEmbeddedOptions> = Config.map(
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

export const layerConfig = Layer.unwrapEffect(Effect.map(logicEmbeddedOptionsConfig, (options) => layer(options)))
