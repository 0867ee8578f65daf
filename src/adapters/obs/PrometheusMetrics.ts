import { Config, Context, Data, Effect, Layer } from "effect"
import type { ConfigError } from "effect"
import { bool, int, str } from "../platform/config/Settings.js"
import * as Fs from "node:fs"
import * as Http from "node:http"
import type { AddressInfo } from "node:net"
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from "prom-client"
import { Metrics, type MetricsShape, type StorageTotals } from "../../application/ports/Metrics.js"
import * as FrontDoor from "../platform/net/FrontDoor.js"
import type { FrontDoorShape, Listener } from "../platform/net/FrontDoor.js"

export interface PrometheusOptions {
  readonly port: number
  readonly path: string
  readonly host?: string
}

/** Where the scrape endpoint actually listens (the bound port when `port` was 0). */
export class MetricsEndpoint extends Context.Tag("resonance/MetricsEndpoint")<
  MetricsEndpoint,
  { readonly host: string; readonly port: number; readonly path: string; readonly registry: Registry }
>() {}

export class MetricsServerError extends Data.TaggedError("MetricsServerError")<{
  readonly reason: "Listen"
  readonly message: string
  readonly cause: unknown
}> {}

// Pushes are in-process writes, usually well under a millisecond.
const pushBuckets = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1]
const checkpointBuckets = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5]

interface CodeChildren {
  readonly requests: Counter.Internal
  readonly errors: Counter.Internal | undefined
  readonly duration: Histogram.Internal<string>
}

interface KeyChildren<C> {
  readonly duration: Histogram.Internal<string>
  readonly byCode: Map<C, CodeChildren>
}

/**
 * Requests of one kind (HTTP by route, gRPC by method): a count by key and code, an error count
 * for the codes `isError` picks, and a duration by key. Label children are made once and cached.
 */
const requestRecorder = <C extends string | number>(
  requests: Counter<string>,
  errors: Counter<string>,
  duration: Histogram<string>,
  isError: (code: C) => boolean
) => {
  const byKey = new Map<string, KeyChildren<C>>()
  const childrenOf = (key: string, code: C): CodeChildren => {
    let entry = byKey.get(key)
    if (entry === undefined) {
      entry = { duration: duration.labels(key), byCode: new Map() }
      byKey.set(key, entry)
    }
    let children = entry.byCode.get(code)
    if (children === undefined) {
      const label = String(code)
      children = {
        requests: requests.labels(key, label),
        errors: isError(code) ? errors.labels(key, label) : undefined,
        duration: entry.duration
      }
      entry.byCode.set(code, children)
    }
    return children
  }
  return (key: string, code: C, seconds: number): void => {
    const children = childrenOf(key, code)
    children.requests.inc()
    if (children.errors !== undefined) children.errors.inc()
    if (Number.isFinite(seconds)) children.duration.observe(seconds)
  }
}

/**
 * Builds the gateway's metrics on `registry` and returns the hot-path recorder.
 * Label children are created once per label value and cached, so a call is a Map lookup and an add;
 * `route` and `method` must therefore come from a bounded set (route templates, not raw paths).
 */
export const makePrometheusMetrics = (
  registry: Registry,
  door?: FrontDoorShape
): { readonly metrics: MetricsShape; readonly registry: Registry; readonly close: () => void } => {
  const registers = [registry]
  collectDefaultMetrics({ register: registry })
  // These walk every handle (or list /proc/self/fd) on the event loop at each scrape: with 10,000
  // sockets a scrape stalled every connection for tens of milliseconds. Sockets are counted by
  // gateway_websocket_connections_active; open fds are read off the event loop below.
  for (const name of [
    "nodejs_active_handles",
    "nodejs_active_handles_total",
    "nodejs_active_resources",
    "nodejs_active_resources_total",
    "process_open_fds"
  ]) registry.removeSingleMetric(name)
  let fdTimer: ReturnType<typeof setInterval> | undefined
  if (process.platform === "linux") {
    let openFds = 0
    const refresh = () =>
      void Fs.promises.readdir("/proc/self/fd").then((fds) => (openFds = fds.length - 1), () => {})
    refresh()
    fdTimer = setInterval(refresh, 15_000).unref()
    new Gauge({
      name: "process_open_fds",
      help: "Number of open file descriptors (read every 15 s off the event loop).",
      registers,
      collect() {
        this.set(openFds)
      }
    })
  }

  const counter = <L extends string = never>(name: string, help: string, labelNames: ReadonlyArray<L> = []) =>
    new Counter<L>({ name, help, labelNames, registers })
  const histogram = <L extends string = never>(
    name: string,
    help: string,
    labelNames: ReadonlyArray<L> = [],
    buckets?: Array<number>
  ) => new Histogram<L>({ name, help, labelNames, registers, ...(buckets === undefined ? {} : { buckets }) })
  /** Seconds into an unlabelled histogram; a reading that is not finite is dropped. */
  const observer = (target: Histogram) => (seconds: number): void => {
    if (Number.isFinite(seconds)) target.observe(seconds)
  }

  const connectionsActive = new Gauge({
    name: "gateway_websocket_connections_active",
    help: "WebSocket connections currently open",
    registers
  })
  const connectionsTotal = counter("gateway_websocket_connections_total", "WebSocket connections accepted since start")
  const connectionsRejected = counter("gateway_websocket_connections_rejected_total", "WebSocket upgrades refused, by reason", ["reason"])
  const presenceBatches = counter("gateway_presence_batches_total", "SyncStatus batches Logic acknowledged")
  const pulses = counter("gateway_messages_pulse_total", "Application-level pulse frames received")
  const received = counter("gateway_messages_received_total", "Frames received from clients")
  const sent = counter("gateway_messages_sent_total", "Frames written to clients")
  const pushFailed = counter("gateway_push_failed_total", "Push recipients that could not be reached")
  const pushDuration = observer(histogram("gateway_push_duration_seconds", "Time to deliver one push to its recipients", [], pushBuckets))
  const walFlush = observer(histogram(
    "gateway_logic_wal_flush_duration_seconds",
    "One fdatasync of the embedded Logic's WAL; every ack of a chat waits for one (a slow disk shows here first)",
    [],
    pushBuckets
  ))
  const walCheckpoint = observer(histogram(
    "gateway_logic_wal_checkpoint_duration_seconds",
    "One checkpoint of the embedded Logic's WAL into its database file, on a worker thread; long ones slow the WAL flushes beside them",
    [],
    checkpointBuckets
  ))
  const httpRequest = requestRecorder<number>(
    counter("gateway_http_requests_total", "HTTP requests served, by route and status code", ["route", "code"]),
    counter("gateway_http_errors_total", "HTTP requests answered with a status code of 400 or more", ["route", "code"]),
    histogram("gateway_http_request_duration_seconds", "HTTP request duration, by route", ["route"]),
    (code) => code >= 400
  )
  const grpcRequest = requestRecorder<string>(
    counter("gateway_grpc_requests_total", "gRPC calls served, by method and status code", ["method", "code"]),
    counter("gateway_grpc_errors_total", "gRPC calls that ended with a status other than OK", ["method", "code"]),
    histogram("gateway_grpc_request_duration_seconds", "gRPC call duration, by method", ["method"]),
    (code) => !isGrpcOk(code)
  )

  let storageSource: (() => StorageTotals) | undefined
  const storageCounter = (name: string, help: string, read: (totals: StorageTotals) => number) =>
    new Counter({
      name,
      help,
      registers,
      collect() {
        if (storageSource === undefined) return
        this.reset()
        this.inc(read(storageSource()))
      }
    })
  storageCounter("gateway_logic_sql_statements_total", "Prepared SQL statements the embedded Logic executed", (t) => t.statements)
  storageCounter("gateway_logic_rows_written_total", "Rows the embedded Logic inserted, updated or deleted", (t) => t.rowsWritten)
  storageCounter("gateway_logic_transactions_total", "Write transactions of the embedded Logic (a group commit's batch is one)", (t) => t.transactions)

  if (door !== undefined) {
    new Gauge({
      name: "gateway_frontdoor_connections",
      help: "Connections held by each listener (public HTTP and WebSocket, push, logic, metrics)",
      labelNames: ["listener"],
      registers,
      collect() {
        for (const listener of door.stats().listeners) this.labels(listener.name).set(listener.open)
      }
    })
    new Gauge({
      name: "gateway_frontdoor_budget",
      help: "Connections all listeners may hold together, below the descriptor limit",
      registers,
      collect() {
        this.set(door.options.connectionBudget)
      }
    })
    new Gauge({
      name: "gateway_frontdoor_pressure",
      help: "Highest of connections, heap and RSS against their budgets (0.8: timeouts of strangers shrink; 0.95: strangers shed)",
      registers,
      collect() {
        this.set(door.stats().pressure)
      }
    })
    new Counter({
      name: "gateway_frontdoor_closed_total",
      help: "Connections the front door refused or closed, by listener and reason",
      labelNames: ["listener", "reason"],
      registers,
      collect() {
        this.reset()
        for (const listener of door.stats().listeners) {
          for (const [reason, count] of Object.entries(listener.closed)) this.labels(listener.name, reason).inc(count)
        }
      }
    })
  }

  const rejectedByReason = new Map<string, Counter.Internal>()

  // prom-client throws on negative or non-finite values; a metric call must never break the caller.
  const metrics: MetricsShape = {
    connectionOpened: () => {
      connectionsActive.inc()
      connectionsTotal.inc()
    },
    connectionClosed: () => connectionsActive.dec(),
    connectionRejected: (reason) => {
      let child = rejectedByReason.get(reason)
      if (child === undefined) {
        child = connectionsRejected.labels(reason)
        rejectedByReason.set(reason, child)
      }
      child.inc()
    },
    presenceBatch: () => presenceBatches.inc(),
    pulse: () => pulses.inc(),
    messageReceived: () => received.inc(),
    messagesSent: (frames) => {
      if (frames > 0 && Number.isFinite(frames)) sent.inc(frames)
    },
    pushFailed: (users) => {
      if (users > 0 && Number.isFinite(users)) pushFailed.inc(users)
    },
    pushDuration,
    httpRequest,
    grpcRequest,
    storage: (read) => {
      storageSource = read
    },
    walFlush,
    walCheckpoint
  }
  return { metrics, registry, close: () => clearInterval(fdTimer) }
}

const isGrpcOk = (code: string): boolean => code === "OK" || code === "0"

const stripQuery = (url: string): string => {
  const q = url.indexOf("?")
  return q === -1 ? url : url.slice(0, q)
}

/** Serves `registry` at `path` on its own small HTTP server behind `listener` for the lifetime of the scope; 404 elsewhere. */
export const serveMetrics = (registry: Registry, options: PrometheusOptions, listener: Listener) =>
  Effect.acquireRelease(
    Effect.async<Http.Server, MetricsServerError>((resume) => {
      const server = Http.createServer({ headersTimeout: 5_000, requestTimeout: 10_000 }, (req, res) => {
        const socket = req.socket
        listener.requestStarted(socket)
        res.once("close", () => listener.requestEnded(socket))
        if (stripQuery(req.url ?? "/") !== options.path) {
          res.writeHead(404, { "content-type": "text/plain; charset=utf-8" }).end("not found\n")
          return
        }
        if (req.method !== "GET" && req.method !== "HEAD") {
          res.writeHead(405, { allow: "GET, HEAD" }).end()
          return
        }
        registry.metrics().then(
          (body) => {
            res.writeHead(200, { "content-type": registry.contentType })
            res.end(req.method === "HEAD" ? undefined : body)
          },
          (error: unknown) => {
            res.writeHead(500, { "content-type": "text/plain; charset=utf-8" }).end(String(error))
          }
        )
      })
      server.keepAliveTimeout = 5_000
      listener.guard(server)
      const onError = (error: Error) =>
        resume(Effect.fail(new MetricsServerError({ reason: "Listen", message: error.message, cause: error })))
      server.once("error", onError)
      server.listen(options.port, options.host ?? "127.0.0.1", () => {
        server.off("error", onError)
        resume(Effect.succeed(server))
      })
      return Effect.sync(() => server.close())
    }),
    (server) =>
      Effect.async<void>((resume) => {
        server.close(() => resume(Effect.void))
        server.closeAllConnections()
      })
  ).pipe(
    Effect.map((server) => ({
      host: options.host ?? "127.0.0.1",
      port: (server.address() as AddressInfo).port,
      path: options.path,
      registry
    }))
  )

/**
 * The Prometheus `Metrics` adapter: its own `Registry` (so several can coexist), Node process
 * metrics, and a scrape endpoint at `http://<host>:<port><path>` closed when the Layer is released.
 */
export const layer = (
  options: PrometheusOptions
): Layer.Layer<Metrics | MetricsEndpoint, MetricsServerError, FrontDoor.FrontDoor> =>
  Layer.scopedContext(
    Effect.gen(function*() {
      const door = yield* FrontDoor.FrontDoor
      const { metrics, registry } = yield* Effect.acquireRelease(
        Effect.sync(() => makePrometheusMetrics(new Registry(), door)),
        (made) => Effect.sync(made.close)
      )
      // Scrapers are few and near: a small share of the budget, a few connections per address.
      const listener = door.listener({
        name: "metrics",
        maxConnections: 64,
        maxPerAddress: 16,
        handshakeTimeoutMs: 5_000,
        idleTimeoutMs: 10_000,
        trustedIdleTimeoutMs: 0,
        requiresCredentials: false
      })
      const endpoint = yield* serveMetrics(registry, options, listener)
      yield* Effect.logInfo(`metrics served at http://${endpoint.host}:${endpoint.port}${endpoint.path}`)
      return Context.make(Metrics, metrics).pipe(Context.add(MetricsEndpoint, endpoint))
    })
  )

/** `observability.metrics.*`: the scrape endpoint (loopback unless said otherwise: it is for the machine's agent). */
export const metricsSettings = Config.nested(
  Config.all({
    enabled: bool("enabled", true),
    port: int("port", 9092),
    path: str("path", "/metrics"),
    host: str("host", "127.0.0.1")
  }),
  "metrics"
).pipe(Config.nested("observability"))

/** The Prometheus adapter as `observability.metrics.*` says, or no metrics when it is not enabled. */
export const layerConfig: Layer.Layer<Metrics, MetricsServerError | ConfigError.ConfigError, FrontDoor.FrontDoor> = Layer.unwrapEffect(
  Effect.map(
    metricsSettings,
    (metrics) => metrics.enabled ? layer({ port: metrics.port, path: metrics.path, host: metrics.host }) : Metrics.layerNoop
  )
)
