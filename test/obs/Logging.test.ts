import { describe, expect, it } from "@effect/vitest"
import { InMemorySpanExporter } from "@opentelemetry/sdk-trace-base"
import { Effect, LogLevel } from "effect"
import { layer as layerLogger, parseLogLevel } from "../../src/adapters/obs/Logging.js"
import { layerTest as layerTracingTest } from "../../src/adapters/obs/Tracing.js"

const capture = () => {
  const lines: Array<string> = []
  const parsed = () => lines.map((line) => JSON.parse(line) as Record<string, any>)
  return { lines, parsed, write: (line: string) => void lines.push(line) }
}

describe("Logging", () => {
  it.effect("JSON format writes one parseable object per line with message, level, trace ids and annotations", () => {
    const out = capture()
    return Effect.gen(function*() {
      const span = yield* Effect.gen(function*() {
        yield* Effect.logInfo("chat forwarded")
        yield* Effect.logWarning("multi\nline")
        return yield* Effect.currentSpan
      }).pipe(Effect.annotateLogs("user", "alice"), Effect.withSpan("Dispatcher.chat"))
      yield* Effect.logError("outside any span")

      expect(out.lines).toHaveLength(3)
      for (const line of out.lines) expect(line).not.toContain("\n")
      const [first, second, third] = out.parsed()
      expect(first!.message).toBe("chat forwarded")
      expect(first!.logLevel).toBe("INFO")
      expect(first!.annotations).toEqual({ user: "alice", traceId: span.traceId, spanId: span.spanId })
      expect(second!.message).toBe("multi\nline")
      expect(second!.logLevel).toBe("WARN")
      expect(second!.annotations.traceId).toBe(span.traceId)
      expect(third!.message).toBe("outside any span")
      expect(third!.logLevel).toBe("ERROR")
      expect(third!.annotations).toEqual({})
    }).pipe(Effect.provide(layerLogger({ format: "json", level: "info", write: out.write })))
  })

  it.effect("a message with an object argument is flattened into the text and annotations", () => {
    const out = capture()
    return Effect.gen(function*() {
      yield* Effect.logWarning("etcd lease lost", { error: "timeout", attempt: 3 })
      yield* Effect.logInfo("two parts", "plain")
      const [first, second] = out.parsed()
      expect(first!.message).toBe("etcd lease lost")
      expect(first!.annotations).toEqual({ error: "timeout", attempt: 3 })
      expect(second!.message).toEqual(["two parts", "plain"])
    }).pipe(Effect.provide(layerLogger({ format: "json", level: "info", write: out.write })))
  })

  it.effect("trace ids in log lines are the ones exported over OpenTelemetry", () => {
    const out = capture()
    const exporter = new InMemorySpanExporter()
    return Effect.gen(function*() {
      yield* Effect.logInfo("push delivered").pipe(Effect.withSpan("PushDelivery.deliver"))
      const exported = exporter.getFinishedSpans().find((s) => s.name === "PushDelivery.deliver")!
      const [line] = out.parsed()
      expect(line!.annotations.traceId).toBe(exported.spanContext().traceId)
      expect(line!.annotations.spanId).toBe(exported.spanContext().spanId)
      expect(line!.annotations.traceId).toMatch(/^[0-9a-f]{32}$/)
    }).pipe(
      Effect.provide(layerLogger({ format: "json", level: "info", write: out.write })),
      Effect.provide(layerTracingTest(exporter))
    )
  })

  it.effect("the minimum level filters lower levels", () => {
    const out = capture()
    return Effect.gen(function*() {
      yield* Effect.logDebug("dropped")
      yield* Effect.logInfo("dropped too")
      yield* Effect.logWarning("kept")
      expect(out.parsed().map((l) => l.message)).toEqual(["kept"])
    }).pipe(Effect.provide(layerLogger({ format: "json", level: "WARN", write: out.write })))
  })

  it.effect("debug level lets debug lines through", () => {
    const out = capture()
    return Effect.gen(function*() {
      yield* Effect.logDebug("details")
      expect(out.parsed().map((l) => [l.message, l.logLevel])).toEqual([["details", "DEBUG"]])
    }).pipe(Effect.provide(layerLogger({ format: "json", level: "Debug", write: out.write })))
  })

  it("parses level names case-insensitively, unknown meaning info", () => {
    expect(parseLogLevel("debug")).toBe(LogLevel.Debug)
    expect(parseLogLevel("INFO")).toBe(LogLevel.Info)
    expect(parseLogLevel(" Warn ")).toBe(LogLevel.Warning)
    expect(parseLogLevel("warning")).toBe(LogLevel.Warning)
    expect(parseLogLevel("ERROR")).toBe(LogLevel.Error)
    expect(parseLogLevel("verbose")).toBe(LogLevel.Info)
    expect(parseLogLevel("")).toBe(LogLevel.Info)
  })
})
