import { circuitBreaker, ConsecutiveBreaker, ExponentialBackoff, handleWhen, retry } from "cockatiel"
import { Config, Data, Duration, Effect } from "effect"
import type { ConfigError, Scope } from "effect"
import type { Etcd3 } from "etcd3"
import * as Fs from "node:fs"
import { list, str } from "../platform/config/Settings.js"

/** Why an etcd operation failed; `reason` is the discriminant. */
export class EtcdError extends Data.TaggedError("EtcdError")<{
  readonly reason: "Unavailable" | "LeaseLost" | "NoFreeInstanceId"
  readonly operation: string
  readonly cause?: unknown
}> {
  override get message(): string {
    const cause = this.cause instanceof Error ? `: ${this.cause.message}` : this.cause === undefined ? "" : `: ${String(this.cause)}`
    return `etcd ${this.operation} failed (${this.reason})${cause}`
  }
}

export interface EtcdClientOptions {
  /** `http://host:port` (or bare `host:port`) of the etcd members. */
  readonly endpoints: ReadonlyArray<string>
  /** Deadline of each unary call, so a black-holed etcd fails fast instead of hanging. */
  readonly callTimeout?: Duration.DurationInput
  /** How long a member that failed 3 times in a row is skipped before the next probe. */
  readonly circuitOpenFor?: Duration.DurationInput
  /** TLS to etcd: the CA that signed its certificate, and a client certificate when etcd asks for one. */
  readonly tls?: { readonly ca: Buffer; readonly cert?: Buffer; readonly key?: Buffer }
  /** etcd's own users (`etcdctl user add`, `auth enable`). */
  readonly auth?: { readonly username: string; readonly password: string }
}

/** `etcd.*` as configured: PEM file paths and credentials, "" for unset. */
export interface EtcdSecuritySettings {
  readonly username: string
  readonly password: string
  readonly tls: { readonly ca: string; readonly cert: string; readonly key: string }
}

/** The configuration of the etcd connection is unusable (a PEM file, half a credential). */
export class EtcdConfigError extends Data.TaggedError("EtcdConfigError")<{ readonly message: string }> {}

const readFile = (key: string, file: string) =>
  Effect.try({
    try: () => Fs.readFileSync(file),
    catch: (error) => new EtcdConfigError({ message: `${key}: cannot read ${file}: ${String(error)}` })
  })

/** Reads the PEM files once, at start; fails naming the key at fault. */
export const etcdSecurity = (
  settings: EtcdSecuritySettings
): Effect.Effect<Pick<EtcdClientOptions, "tls" | "auth">, EtcdConfigError> =>
  Effect.gen(function*() {
    const { tls } = settings
    if ((settings.username === "") !== (settings.password === "")) {
      return yield* new EtcdConfigError({ message: "etcd.username and etcd.password go together" })
    }
    if ((tls.cert === "") !== (tls.key === "")) {
      return yield* new EtcdConfigError({ message: "etcd.tls.cert and etcd.tls.key go together" })
    }
    if (tls.ca === "" && tls.cert !== "") {
      return yield* new EtcdConfigError({ message: "etcd.tls.cert needs etcd.tls.ca, the CA that signed etcd's certificate" })
    }
    const auth = settings.username === "" ? undefined : { username: settings.username, password: settings.password }
    if (tls.ca === "") return { auth }
    return {
      auth,
      tls: {
        ca: yield* readFile("etcd.tls.ca", tls.ca),
        ...(tls.cert === "" ? {} : { cert: yield* readFile("etcd.tls.cert", tls.cert), key: yield* readFile("etcd.tls.key", tls.key) })
      }
    }
  })

/** `etcd.*`: where etcd is and how to prove who we are to it. */
export const etcdSettings = Config.nested(
  Config.all({
    endpoints: list("endpoints"),
    username: str("username", ""),
    password: str("password", ""),
    tls: Config.nested(Config.all({ ca: str("ca", ""), cert: str("cert", ""), key: str("key", "") }), "tls")
  }),
  "etcd"
)

/** The etcd client's options from `etcd.*`, its PEM files read each time it runs (Registry and Discovery each run it once). */
export const etcdClientConfig: Effect.Effect<EtcdClientOptions, ConfigError.ConfigError | EtcdConfigError> = Effect.flatMap(
  etcdSettings,
  (etcd) => Effect.map(etcdSecurity(etcd), (security): EtcdClientOptions => ({ endpoints: etcd.endpoints, ...security }))
)

/** `etcdClientConfig` for a module that cannot work without etcd: an empty `etcd.endpoints` is refused. */
export const requiredEtcdClientConfig = Effect.filterOrFail(
  etcdClientConfig,
  (options) => options.endpoints.length > 0,
  () => new EtcdConfigError({ message: "etcd.endpoints is empty: the etcd registry and discovery need an etcd to talk to" })
)

export type Etcd3Module = typeof import("etcd3")

/**
 * etcd3 is loaded when a client is first made, not with the gateway: with its gRPC stubs and
 * protobufjs it took ~150 ms of every start, embedded mode included, which never talks to etcd.
 */
export const loadEtcd3: Effect.Effect<Etcd3Module> = Effect.promise(() => import("etcd3"))

const withScheme = (endpoint: string, secure: boolean) =>
  /^https?:\/\//.test(endpoint) ? endpoint : `${secure ? "https" : "http"}://${endpoint}`

/**
 * An etcd3 client tuned to come back quickly after an etcd restart (etcd3's defaults keep a
 * failed member out for 5 s and let watch reconnects back off up to 30 s).
 */
export const makeEtcdClient = (etcd3: Etcd3Module, options: EtcdClientOptions): Etcd3 => {
  const { Etcd3, isRecoverableError } = etcd3
  const callTimeoutMs = Duration.toMillis(options.callTimeout ?? "5 seconds")
  const halfOpenAfter = Duration.toMillis(options.circuitOpenFor ?? "1 second")
  return new Etcd3({
    hosts: options.endpoints.map((endpoint) => withScheme(endpoint, options.tls !== undefined)),
    ...(options.tls === undefined
      ? {}
      : {
        credentials: {
          rootCertificate: options.tls.ca,
          ...(options.tls.cert === undefined ? {} : { certChain: options.tls.cert, privateKey: options.tls.key })
        }
      }),
    ...(options.auth === undefined ? {} : { auth: { username: options.auth.username, password: options.auth.password } }),
    defaultCallOptions: (context) => (context.isStream ? {} : { deadline: Date.now() + callTimeoutMs }),
    grpcOptions: {
      "grpc.initial_reconnect_backoff_ms": 200,
      "grpc.max_reconnect_backoff_ms": 2_000
    },
    faultHandling: {
      host: () => circuitBreaker(handleWhen(isRecoverableError), { halfOpenAfter, breaker: new ConsecutiveBreaker(3) }),
      global: retry(handleWhen(isRecoverableError), { maxAttempts: 1 }),
      watchBackoff: new ExponentialBackoff({ initialDelay: 100, maxDelay: 2_000 }).next()
    }
  })
}

/** The client as a scoped resource: closed (all streams and channels) when the scope ends. */
export const acquireEtcdClient = (options: EtcdClientOptions): Effect.Effect<Etcd3, never, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.map(loadEtcd3, (etcd3) => makeEtcdClient(etcd3, options)),
    (client) => Effect.sync(() => client.close())
  )

/** One etcd call as an Effect, failing with `EtcdError` "Unavailable". */
export const etcdCall = <A>(operation: string, run: () => PromiseLike<A>): Effect.Effect<A, EtcdError> =>
  Effect.tryPromise({
    try: () => Promise.resolve(run()),
    catch: (cause) => new EtcdError({ reason: "Unavailable", operation, cause })
  })
