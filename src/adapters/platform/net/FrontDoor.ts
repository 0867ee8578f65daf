import { Config, ConfigError, Context, Effect, Either, Layer, Option, Runtime } from "effect"
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as V8 from "node:v8"
import { num } from "../config/Settings.js"
import type { FrontDoorOptions, FrontDoorShape } from "./Guard.js"
import { makeFrontDoor } from "./Overload.js"

export type { FrontDoorOptions, FrontDoorShape, Listener, ListenerPolicy, PressureLevel } from "./Guard.js"

/** The soft "Max open files" of `/proc/self/limits`; undefined where it cannot be read. */
export const parseOpenFileLimit = (limits: string): number | undefined => {
  const line = limits.split("\n").find((candidate) => candidate.startsWith("Max open files"))
  const soft = line?.slice("Max open files".length).trim().split(/\s+/)[0]
  if (soft === undefined) return undefined
  if (soft === "unlimited") return 1_048_576
  const value = Number(soft)
  return Number.isInteger(value) && value > 0 ? value : undefined
}

export const readOpenFileLimit = (): number | undefined => {
  try {
    return parseOpenFileLimit(Fs.readFileSync("/proc/self/limits", "utf8"))
  } catch {
    return undefined
  }
}

/**
 * What a budget leaves for files, outgoing connections, etcd and libuv: 2 %, at least 64. An
 * embedded gateway holds 33 descriptors besides its connections (SQLite's files, the loop's own,
 * its pipes); in cluster mode a few more go to Logic, etcd and the trace exporter. 400 of 20,000
 * leaves room for ten times that, and each one more in the budget is one more client of a storm
 * kept under `critical`.
 */
export const connectionBudgetOf = (maxOpenFiles: number) => Math.max(16, maxOpenFiles - Math.max(64, Math.ceil(maxOpenFiles * 0.02)))

/** The memory this process may use: its cgroup's limit when it has one, else the machine's. */
export const memoryLimit = (): number => {
  try {
    const text = Fs.readFileSync("/sys/fs/cgroup/memory.max", "utf8").trim()
    if (text !== "max" && Number(text) > 0) return Number(text)
  } catch {
    // not in a cgroup v2 with a limit
  }
  return Os.totalmem()
}

/** The front door of this process: one per process, shared by every listener. */
export class FrontDoor extends Context.Tag("resonance/net/FrontDoor")<FrontDoor, FrontDoorShape>() {}

/** The front door with `options`: its budgets, logged at start, and each change of pressure. */
export const layer = (options: FrontDoorOptions): Layer.Layer<FrontDoor> =>
  Layer.scoped(
    FrontDoor,
    Effect.gen(function*() {
      const runFork = Runtime.runFork(yield* Effect.runtime<never>())
      const door = yield* Effect.acquireRelease(
        Effect.sync(() =>
          makeFrontDoor(options, (level, stats) =>
            runFork(
              (level === "normal" ? Effect.logInfo("front door: pressure back to normal") : Effect.logWarning(
                `front door: pressure ${level}: ${level === "critical" ? "strangers are shed" : "timeouts of strangers shortened"}`
              )).pipe(Effect.annotateLogs({
                pressure: Math.round(stats.pressure * 100) / 100,
                connections: stats.open,
                budget: stats.connectionBudget,
                by_listener: stats.listeners.map((l) => `${l.name}:${l.open}`).join(",")
              }))
            ))
        ),
        (made) => Effect.sync(made.close)
      )
      yield* Effect.logInfo("front door: connection budget from the descriptor limit").pipe(Effect.annotateLogs({
        max_open_files: options.maxOpenFiles,
        limit_from: options.limitSource ?? "configuration",
        connection_budget: options.connectionBudget,
        max_heap_mb: Math.round(options.maxHeapBytes / 1_048_576),
        max_rss_mb: Math.round(options.maxRssBytes / 1_048_576)
      }))
      return door
    })
  )

/** A roomy door for tests of other things: the machine's limit, no memory pressure. */
export const layerTest = (overrides: Partial<FrontDoorOptions> = {}): Layer.Layer<FrontDoor> =>
  Layer.scoped(
    FrontDoor,
    Effect.acquireRelease(
      Effect.sync(() =>
        makeFrontDoor({
          maxOpenFiles: 20_000,
          connectionBudget: 19_000,
          pressureThreshold: 0.8,
          maxHeapBytes: Number.MAX_SAFE_INTEGER,
          maxRssBytes: Number.MAX_SAFE_INTEGER,
          ...overrides
        })
      ),
      (door) => Effect.sync(door.close)
    )
  )

/** `overload.*`: each left out is derived from this process's limits. */
export const frontDoorSettings = Config.nested(
  Config.all({
    maxOpenFiles: Config.option(Config.integer("max_open_files")),
    connectionBudget: Config.option(Config.integer("connection_budget")),
    pressureThreshold: num("pressure_threshold", 0.8),
    maxHeapBytes: Config.option(Config.number("max_heap_bytes")),
    maxRssBytes: Config.option(Config.number("max_rss_bytes"))
  }),
  "overload"
)

const invalid = (key: string, message: string) => ConfigError.InvalidData(["overload", key], message)

/**
 * The descriptor limit from `/proc/self/limits` (1,024 assumed where it cannot be read), the
 * budget 2 % (at least 64) below it, 90 % of V8's heap limit and of the cgroup's or machine's
 * memory; a configured budget is refused at or above the limit.
 */
export const frontDoorOptionsConfig: Config.Config<FrontDoorOptions> = Config.mapOrFail(frontDoorSettings, (settings) => {
  const read = readOpenFileLimit()
  const maxOpenFiles = Option.getOrElse(settings.maxOpenFiles, () => read ?? 1024)
  if (maxOpenFiles < 32) return Either.left(invalid("max_open_files", "must be at least 32"))
  const connectionBudget = Option.getOrElse(settings.connectionBudget, () => connectionBudgetOf(maxOpenFiles))
  if (connectionBudget < 1 || connectionBudget >= maxOpenFiles) {
    return Either.left(invalid("connection_budget", `must be between 1 and the descriptor limit (${maxOpenFiles}), with room for files and clients`))
  }
  if (!(settings.pressureThreshold > 0 && settings.pressureThreshold < 0.95)) {
    return Either.left(invalid("pressure_threshold", "must be above 0 and below 0.95"))
  }
  return Either.right({
    maxOpenFiles,
    limitSource: Option.isSome(settings.maxOpenFiles)
      ? "overload.max_open_files"
      : read !== undefined
      ? "/proc/self/limits"
      : "assumed (cannot read /proc/self/limits; set overload.max_open_files)",
    connectionBudget,
    pressureThreshold: settings.pressureThreshold,
    maxHeapBytes: Option.getOrElse(settings.maxHeapBytes, () => Math.floor(V8.getHeapStatistics().heap_size_limit * 0.9)),
    maxRssBytes: Option.getOrElse(settings.maxRssBytes, () => Math.floor(memoryLimit() * 0.9))
  })
})

/** The front door as `overload.*` says. */
export const layerConfig: Layer.Layer<FrontDoor, ConfigError.ConfigError> = Layer.unwrapEffect(
  Effect.map(frontDoorOptionsConfig, layer)
)
