import { Config, ConfigError, Duration, Either, Option } from "effect"
import { defaultChatRules } from "../../../domain/Packet.js"
import { defaultSessionRules } from "../../../domain/Session.js"

/**
 * How a setting is read with Effect's `Config` (names as in the YAML, defaults, Go-style durations,
 * comma lists), shared by every adapter's `layerConfig`; and the few keys more than one adapter reads.
 */
// Microseconds as Go writes them: us, \u00b5s (micro sign) or \u03bcs (Greek mu). Escaped, not typed:
// esbuild escapes strings but not regular expressions, and one non-ASCII character in the bundle
// makes V8 hold all 4.8 MB of its source as a two-byte string (scripts/run-bundle.mjs).
const goDurationPart = /([0-9]*\.?[0-9]+)(ns|us|\u00b5s|\u03bcs|ms|s|m|h)/g
const unitMillis: Record<string, number> = { ns: 1e-6, us: 1e-3, "\u00b5s": 1e-3, "\u03bcs": 1e-3, ms: 1, s: 1000, m: 60_000, h: 3_600_000 }

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

export const invalidData = (path: Array<string>, message: string) => ConfigError.InvalidData(path, message)

export const duration = (name: string, fallback: string) =>
  Config.string(name).pipe(
    Config.mapOrFail((text) => Either.mapLeft(parseDuration(text), (message) => invalidData([name], message))),
    Config.withDefault(Either.getOrThrow(parseDuration(fallback)))
  )

export const int = (name: string, fallback: number) => Config.integer(name).pipe(Config.withDefault(fallback))
export const num = (name: string, fallback: number) => Config.number(name).pipe(Config.withDefault(fallback))
export const str = (name: string, fallback: string) => Config.string(name).pipe(Config.withDefault(fallback))
export const bool = (name: string, fallback: boolean) => Config.boolean(name).pipe(Config.withDefault(fallback))
export const list = (name: string, fallback: ReadonlyArray<string> = []) =>
  Config.array(Config.string(), name).pipe(
    Config.map((items) => items.map((item) => item.trim()).filter((item) => item !== "")),
    Config.withDefault(fallback as Array<string>)
  )

/** Two slices of one YAML section read as one record (`limits` is read by several adapters). */
export const merged = <A extends object, B extends object>(a: Config.Config<A>, b: Config.Config<B>): Config.Config<A & B> =>
  Config.map(Config.all([a, b]), ([left, right]) => ({ ...left, ...right }))

/** `etcd.endpoints`: where etcd is; set, it also means cluster mode (read by the mode decision and the internal bind). */
export const etcdEndpointsSetting = Config.nested(list("endpoints"), "etcd")

/** A host only this machine reaches: advertised in etcd, it would send every peer back to itself. */
export const isLoopbackHost = (host: string) =>
  host === "localhost" || host === "::1" || host === "[::1]" || host.startsWith("127.") || host.endsWith(".localhost")

/**
 * `service.*`: who this process is and where it listens; read by the servers, the registry and
 * tracing. The advertised host is upstream's `GetHost`: `service.host`, else `$HOSTNAME` (which
 * the configuration sources give as the default of `service.host`), else `localhost`. The internal
 * gRPC port binds `service.grpc_host`, else `0.0.0.0` in cluster mode with a routable advertised
 * host (so Task reaches what etcd names), else `127.0.0.1`.
 */
export const serviceSettings = Config.map(
  Config.all({
    service: Config.nested(
      Config.all({
        name: str("name", "gateway-service"),
        version: str("version", "0.1.0"),
        advertiseHost: str("host", ""),
        bindHost: str("bind_host", "0.0.0.0"),
        httpPort: int("http_port", 8080),
        grpcPort: int("grpc_port", 15091),
        grpcHost: str("grpc_host", "")
      }),
      "service"
    ),
    endpoints: etcdEndpointsSetting
  }),
  ({ endpoints, service }) => {
    const advertiseHost = service.advertiseHost.trim() !== "" ? service.advertiseHost.trim() : "localhost"
    const grpcHost = service.grpcHost.trim() !== ""
      ? service.grpcHost.trim()
      : endpoints.length > 0 && !isLoopbackHost(advertiseHost)
      ? "0.0.0.0"
      : "127.0.0.1"
    return { ...service, advertiseHost, grpcHost }
  }
)

/** The `limits.*` that the chat path and the session API both enforce, in the gateway and in Logic. */
export const sharedLimitSettings = Config.nested(
  Config.all({
    maxMessageBytes: int("max_message_bytes", defaultChatRules.maxContentBytes),
    maxGroupMembers: int("max_group_members", defaultSessionRules.maxGroupMembers)
  }),
  "limits"
)
