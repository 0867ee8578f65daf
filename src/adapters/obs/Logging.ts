import { Cause, Config, Context, Effect, FiberRef, FiberRefs, HashMap, HashSet, Layer, Logger, LogLevel, Option, Tracer } from "effect"
import { str } from "../platform/config/Settings.js"

export type LogFormat = "json" | "pretty"

export interface LoggingOptions {
  /** `json`: one JSON object per line (production); `pretty`: Effect's human-readable logger. */
  readonly format: LogFormat
  /** debug | info | warn | error (case-insensitive); anything else means info. */
  readonly level: string
  /** Where JSON lines go; defaults to stdout. Ignored by the pretty format, which writes to the console. */
  readonly write?: (line: string) => void
}

export const parseLogLevel = (level: string): LogLevel.LogLevel => {
  switch (level.trim().toLowerCase()) {
    case "trace":
      return LogLevel.Trace
    case "debug":
      return LogLevel.Debug
    case "warn":
    case "warning":
      return LogLevel.Warning
    case "error":
      return LogLevel.Error
    case "fatal":
      return LogLevel.Fatal
    default:
      return LogLevel.Info
  }
}

/** Adds `traceId` and `spanId` annotations whenever the log call runs inside a span. */
export const withTraceIds = <Message, Output>(self: Logger.Logger<Message, Output>): Logger.Logger<Message, Output> =>
  Logger.mapInputOptions(self, (options) => {
    const span = Context.getOption(FiberRefs.getOrDefault(options.context, FiberRef.currentContext), Tracer.ParentSpan)
    if (Option.isNone(span)) return options
    return {
      ...options,
      annotations: HashMap.set(
        HashMap.set(options.annotations, "traceId", span.value.traceId as unknown),
        "spanId",
        span.value.spanId as unknown
      )
    }
  })

const isRecord = (value: unknown): value is Record<string, unknown> =>
  typeof value === "object" && value !== null && !Array.isArray(value) && !(value instanceof Error)

/**
 * `Effect.log("text", { key: value })` arrives as the message array `["text", {...}]`: keep the
 * text as the message and lift the object's fields into annotations, so JSON lines stay flat.
 */
export const withStructuredArgs = <Output>(self: Logger.Logger<unknown, Output>): Logger.Logger<unknown, Output> =>
  Logger.mapInputOptions(self, (options) => {
    const message = options.message
    if (!Array.isArray(message) || message.length < 2 || typeof message[0] !== "string") return options
    let annotations = options.annotations
    const rest: Array<unknown> = []
    for (const part of message.slice(1)) {
      if (isRecord(part)) {
        for (const [key, value] of Object.entries(part)) annotations = HashMap.set(annotations, key, value)
      } else {
        rest.push(part instanceof Error ? part.message : part)
      }
    }
    return { ...options, annotations, message: rest.length === 0 ? message[0] : [message[0], ...rest] }
  })

const writeStdout = (line: string): void => {
  process.stdout.write(line + "\n")
}

export const makeLogger = (format: LogFormat, write: (line: string) => void = writeStdout): Logger.Logger<unknown, void> =>
  withTraceIds(
    withStructuredArgs(
      format === "json"
        ? Logger.map(Logger.jsonLogger, write)
        : Logger.prettyLogger()
    )
  )

/**
 * The process's one logger, at the minimum level for everything under this Layer: it replaces
 * whatever loggers are installed (a provisional one during start-up included), so no event is
 * written twice.
 */
export const layer = (options: LoggingOptions): Layer.Layer<never> =>
  Layer.merge(
    Layer.scopedDiscard(
      Effect.locallyScopedWith(FiberRef.currentLoggers, () => HashSet.make(makeLogger(options.format, options.write)))
    ),
    Logger.minimumLogLevel(parseLogLevel(options.level))
  )

const messageOf = (error: unknown): string => (error instanceof Error ? error.message : String(error))

/**
 * A program that cannot start says why in one log line (JSON unless told otherwise) and fails, so
 * the runtime exits 1 without a stack trace of its own.
 */
export const reportStartupFailure = <A, E, R>(program: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
  Effect.tapErrorCause(program, (cause) =>
    Cause.isInterruptedOnly(cause)
      ? Effect.void
      : Effect.logError("cannot start").pipe(Effect.annotateLogs({ error: messageOf(Cause.squash(cause)) })))

/** `log.*`. */
export const logSettings = Config.nested(
  Config.all({
    // `console` is upstream's name for the human-readable format.
    format: Config.literal("json", "pretty", "console")("format").pipe(
      Config.map((format) => (format === "json" ? "json" as const : "pretty" as const)),
      Config.withDefault("json" as const)
    ),
    level: str("level", "info")
  }),
  "log"
)

/** The logger as `log.*` says. */
export const layerConfig = Layer.unwrapEffect(Effect.map(logSettings, layer))
