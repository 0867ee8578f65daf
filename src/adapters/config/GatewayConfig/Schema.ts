import { Config, ConfigError, Duration, Either, Option } from "effect"
import { defaultChatRules } from "../../../domain/Packet.js"
import { defaultSessionRules } from "../../../domain/Session.js"
import { MIN_SECRET_BYTES } from "../../../domain/Token.js"

/**
 * What the gateway (and the reference Logic) can be configured with, and how each setting is read:
 * names, defaults and checks, as an Effect `Config` over `RESONANCE_*` names.
 */
export interface GatewayConfig {
  /** Deployment environment; selects `gateway.<env>.yaml`. */
  readonly env: string
  readonly service: {
    readonly name: string
    readonly version: string
    /**
     * `service.host`, as upstream means it: the host other services reach this process at (put in
     * etcd); unset or empty: `$HOSTNAME`, then `localhost`.
     */
    readonly advertiseHost: string
    /** `service.bind_host`: where HTTP, WebSocket and metrics listen. */
    readonly bindHost: string
    readonly httpPort: number
    readonly grpcPort: number
    /**
     * Bind address of the internal gRPC port (PushService, the reference Logic): `service.grpc_host`,
     * else the loopback, except in cluster mode with a non-loopback advertised host (the address in
     * etcd must be reachable), where it is every interface.
     */
    readonly grpcHost: string
  }
  /** PushService for the Task service; `undefined`: on in cluster mode, off in embedded mode. */
  readonly push: { readonly enabled: boolean | undefined }
  /** How internal RPCs authenticate: shared token, mutual TLS, address lists. */
  readonly internal: {
    readonly token: string
    readonly insecure: boolean
    readonly tls: { readonly ca: string; readonly cert: string; readonly key: string; readonly serverName: string }
    readonly ipAllow: ReadonlyArray<string>
    readonly ipDeny: ReadonlyArray<string>
  }
  readonly http: {
    readonly headersTimeout: Duration.Duration
    readonly requestTimeout: Duration.Duration
    readonly maxConnections: number
  }
  readonly logicServiceName: string
  readonly ws: {
    readonly path: string
    readonly maxMessageSize: number
    readonly pingInterval: Duration.Duration
    readonly pongTimeout: Duration.Duration
    readonly sendBufferLimit: number
    /** Bytes of frames waiting behind a chat in flight past which the socket's reads pause. */
    readonly maxPendingBytes: number
    readonly compression: { readonly enabled: boolean; readonly threshold: number; readonly concurrencyLimit: number }
  }
  readonly observability: {
    readonly trace: {
      readonly enabled: boolean
      readonly endpoint: string
      readonly sampler: number
      readonly protocol: "auto" | "grpc" | "http"
      readonly insecure: boolean
    }
    readonly metrics: { readonly enabled: boolean; readonly port: number; readonly path: string }
  }
  readonly log: { readonly format: "json" | "pretty"; readonly level: string }
  readonly statusBatcher: {
    readonly batchSize: number
    readonly flushInterval: Duration.Duration
    /** `false`: never report offline (as upstream), for a Logic that deletes routes without checking the gateway. */
    readonly sendOffline: boolean
    /** Presence events held while Logic is away; past it they are dropped for one full resync. */
    readonly maxPending: number
  }
  readonly etcd: {
    readonly endpoints: ReadonlyArray<string>
    readonly username: string
    readonly password: string
    readonly tls: { readonly ca: string; readonly cert: string; readonly key: string }
  }
  readonly registry: { readonly namespace: string; readonly defaultTtl: Duration.Duration }
  readonly embedded: { readonly databasePath: string; readonly synchronous: "normal" | "full"; readonly commitInterval: Duration.Duration }
  readonly auth: {
    readonly secretKey: string | undefined
    readonly tokenTtl: Duration.Duration
    readonly bcryptCost: number
    /** Password hashes computed at once (0: cores - 1, at least 1) and waiting beyond them. */
    readonly hashConcurrency: number
    readonly hashQueue: number
    /** How often a gateway asks Logic for tokens revoked elsewhere. */
    readonly revocationPollInterval: Duration.Duration
  }
  readonly logic: { readonly timeout: Duration.Duration; readonly attemptTimeout: Duration.Duration; readonly retries: number }
  readonly limits: {
    readonly maxConnections: number
    readonly maxConnectionsPerIp: number
    readonly maxDevicesPerUser: number
    readonly messagesPerSecond: number
    readonly messageBurst: number
    readonly pulsesPerSecond: number
    readonly pulseBurst: number
    readonly acksPerSecond: number
    readonly ackBurst: number
    readonly maxMessageBytes: number
    readonly authPerIpPerMinute: number
    readonly failedLoginsPerUsername: number
    readonly failedLoginWindow: Duration.Duration
    readonly sessionPerUserPerSecond: number
    readonly maxGroupMembers: number
    readonly maxPageBytes: number
    readonly sessionPageSize: number
  }
  readonly security: {
    readonly ipAllow: ReadonlyArray<string>
    readonly ipDeny: ReadonlyArray<string>
    readonly trustedProxies: ReadonlyArray<string>
    readonly corsOrigins: ReadonlyArray<string>
  }
  readonly shutdown: {
    readonly drainSeconds: number
    readonly timeoutSeconds: number
    /**
     * How a drain ends a socket. `reconnect`: the connection is cut without a close frame, an
     * unclean close that the official web client answers by reconnecting; `clean`: close 1012.
     */
    readonly closeMode: "reconnect" | "clean"
  }
}

const goDurationPart = /([0-9]*\.?[0-9]+)(ns|us|µs|ms|s|m|h)/g
const unitMillis: Record<string, number> = { ns: 1e-6, us: 1e-3, "µs": 1e-3, ms: 1, s: 1000, m: 60_000, h: 3_600_000 }

/** Go-style durations as in the Go gateway's YAML ("30s", "100ms", "1m30s"); a bare number is seconds. */
export const parseDuration = (text: string): Either.Either<Duration.Duration, string> => {
  const trimmed = text.trim()
  if (/^[0-9]*\.?[0-9]+$/.test(trimmed)) return Either.right(Duration.seconds(Number(trimmed)))
  let total = 0
  let consumed = 0
  for (const match of trimmed.matchAll(goDurationPart)) {
    total += Number(match[1]) * unitMillis[match[2]!]!
    consumed += match[0].length
  }
  if (consumed === 0 || consumed !== trimmed.length) {
    const decoded = Duration.decodeUnknown(trimmed)
    return Option.match(decoded, {
      onNone: () => Either.left(`invalid duration "${text}" (use e.g. 30s, 100ms, 1m)`),
      onSome: Either.right
    })
  }
  return Either.right(Duration.millis(total))
}

const duration = (name: string, fallback: string) =>
  Config.string(name).pipe(
    Config.mapOrFail((text) =>
      Either.mapLeft(parseDuration(text), (message) => ConfigErrorInvalid([name], message))
    ),
    Config.withDefault(Either.getOrThrow(parseDuration(fallback)))
  )

const ConfigErrorInvalid = (path: Array<string>, message: string) => ConfigError.InvalidData(path, message)

const int = (name: string, fallback: number) => Config.integer(name).pipe(Config.withDefault(fallback))
const num = (name: string, fallback: number) => Config.number(name).pipe(Config.withDefault(fallback))
const str = (name: string, fallback: string) => Config.string(name).pipe(Config.withDefault(fallback))
const bool = (name: string, fallback: boolean) => Config.boolean(name).pipe(Config.withDefault(fallback))
const list = (name: string, fallback: ReadonlyArray<string> = []) =>
  Config.array(Config.string(), name).pipe(
    Config.map((items) => items.map((item) => item.trim()).filter((item) => item !== "")),
    Config.withDefault(fallback as Array<string>)
  )

export const gatewayConfig: Config.Config<GatewayConfig> = Config.all({
  env: str("env", "development"),
  service: Config.nested(
    Config.all({
      name: str("name", "gateway-service"),
      version: str("version", "0.1.0"),
      // Resolved by loadConfig: it needs $HOSTNAME and the mode.
      advertiseHost: str("host", ""),
      bindHost: str("bind_host", "0.0.0.0"),
      httpPort: int("http_port", 8080),
      grpcPort: int("grpc_port", 15091),
      grpcHost: str("grpc_host", "")
    }),
    "service"
  ),
  push: Config.nested(
    Config.all({ enabled: Config.option(Config.boolean("enabled")).pipe(Config.map(Option.getOrUndefined)) }),
    "push"
  ),
  internal: Config.nested(
    Config.all({
      token: str("token", ""),
      insecure: bool("insecure", false),
      tls: Config.nested(
        Config.all({ ca: str("ca", ""), cert: str("cert", ""), key: str("key", ""), serverName: str("server_name", "") }),
        "tls"
      ),
      ipAllow: list("ip_allow"),
      ipDeny: list("ip_deny")
    }),
    "internal"
  ),
  http: Config.nested(
    Config.all({
      headersTimeout: duration("headers_timeout", "10s"),
      requestTimeout: duration("request_timeout", "30s"),
      maxConnections: int("max_connections", 100_000)
    }),
    "http"
  ),
  logicServiceName: str("logic_service_name", "logic-service"),
  ws: Config.nested(
    Config.all({
      path: str("path", "/ws"),
      maxMessageSize: int("max_message_size", 1024 * 1024),
      pingInterval: duration("ping_interval", "30s"),
      pongTimeout: duration("pong_timeout", "60s"),
      sendBufferLimit: int("send_buffer_limit", 4 * 1024 * 1024),
      maxPendingBytes: int("max_pending_bytes", 256 * 1024),
      compression: Config.nested(
        Config.all({
          enabled: bool("enabled", false),
          threshold: int("threshold", 1024),
          concurrencyLimit: int("concurrency_limit", 4)
        }),
        "compression"
      )
    }),
    "ws_config"
  ),
  observability: Config.nested(
    Config.all({
      trace: Config.nested(
        Config.all({
          enabled: Config.all({ enabled: bool("enabled", true), disable: bool("disable", false) }).pipe(
            Config.map(({ disable, enabled }) => enabled && !disable)
          ),
          endpoint: str("endpoint", ""),
          sampler: num("sampler", 1),
          protocol: Config.literal("auto", "grpc", "http")("protocol").pipe(Config.withDefault("auto" as const)),
          insecure: bool("insecure", true)
        }),
        "trace"
      ),
      metrics: Config.nested(
        Config.all({ enabled: bool("enabled", true), port: int("port", 9092), path: str("path", "/metrics") }),
        "metrics"
      )
    }),
    "observability"
  ),
  log: Config.nested(
    Config.all({
      // `console` is upstream's name for the human-readable format.
      format: Config.literal("json", "pretty", "console")("format").pipe(
        Config.map((format) => (format === "json" ? "json" as const : "pretty" as const)),
        Config.withDefault("json" as const)
      ),
      level: str("level", "info")
    }),
    "log"
  ),
  statusBatcher: Config.nested(
    Config.all({
      batchSize: int("batch_size", 50),
      flushInterval: duration("flush_interval", "100ms"),
      sendOffline: bool("send_offline", true),
      maxPending: int("max_pending", 100_000)
    }),
    "status_batcher"
  ),
  etcd: Config.nested(
    Config.all({
      endpoints: list("endpoints"),
      username: str("username", ""),
      password: str("password", ""),
      tls: Config.nested(Config.all({ ca: str("ca", ""), cert: str("cert", ""), key: str("key", "") }), "tls")
    }),
    "etcd"
  ),
  registry: Config.nested(
    Config.all({ namespace: str("namespace", "/resonance/services"), defaultTtl: duration("default_ttl", "30s") }),
    "registry"
  ),
  embedded: Config.nested(
    Config.all({
      databasePath: str("database_path", "./data/resonance.db"),
      synchronous: Config.literal("full", "normal")("synchronous").pipe(Config.withDefault("full" as const)),
      commitInterval: duration("commit_interval", "2ms")
    }),
    "embedded"
  ),
  auth: Config.nested(
    Config.all({
      secretKey: Config.option(Config.string("secret_key")).pipe(
        Config.map((value) => Option.getOrUndefined(Option.filter(value, (s) => s !== ""))),
        Config.mapOrFail((secret) =>
          secret !== undefined && Buffer.byteLength(secret) < MIN_SECRET_BYTES
            ? Either.left(ConfigErrorInvalid(
              ["secret_key"],
              `must be at least ${MIN_SECRET_BYTES} bytes (it signs every token); leave it unset to have one generated`
            ))
            : Either.right(secret)
        )
      ),
      tokenTtl: duration("token_ttl", "24h"),
      bcryptCost: int("bcrypt_cost", 10),
      hashConcurrency: int("hash_concurrency", 0),
      hashQueue: int("hash_queue", 32),
      revocationPollInterval: duration("revocation_poll_interval", "500ms")
    }),
    "auth"
  ),
  logic: Config.nested(
    Config.all({ timeout: duration("timeout", "5s"), attemptTimeout: duration("attempt_timeout", "2s"), retries: int("retries", 2) }),
    "logic"
  ),
  limits: Config.nested(
    Config.all({
      maxConnections: int("max_connections", 0),
      maxConnectionsPerIp: int("max_connections_per_ip", 100),
      maxDevicesPerUser: int("max_devices_per_user", 5),
      // Per user, all devices together: no person types 10 messages a second; a script does.
      messagesPerSecond: num("messages_per_second", 10),
      messageBurst: num("message_burst", 20),
      // The official client pulses every 30 s and acks every push it receives.
      pulsesPerSecond: num("pulses_per_second", 1),
      pulseBurst: num("pulse_burst", 10),
      acksPerSecond: num("acks_per_second", 200),
      ackBurst: num("ack_burst", 1000),
      maxMessageBytes: int("max_message_bytes", defaultChatRules.maxContentBytes),
      authPerIpPerMinute: num("auth_per_ip_per_minute", 30),
      failedLoginsPerUsername: num("failed_logins_per_username", 5),
      failedLoginWindow: duration("failed_login_window", "15m"),
      sessionPerUserPerSecond: num("session_per_user_per_second", 50),
      maxGroupMembers: int("max_group_members", defaultSessionRules.maxGroupMembers),
      maxPageBytes: int("max_page_bytes", 1024 * 1024),
      sessionPageSize: int("session_page_size", 100)
    }),
    "limits"
  ),
  security: Config.nested(
    Config.all({
      ipAllow: list("ip_allow"),
      ipDeny: list("ip_deny"),
      trustedProxies: list("trusted_proxies"),
      corsOrigins: list("cors_origins", ["*"])
    }),
    "security"
  ),
  shutdown: Config.nested(
    Config.all({
      drainSeconds: num("drain_seconds", 3),
      timeoutSeconds: num("timeout_seconds", 10),
      closeMode: Config.literal("reconnect", "clean")("close_mode").pipe(Config.withDefault("reconnect" as const))
    }),
    "shutdown"
  )
})
