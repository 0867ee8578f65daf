import { Config, Effect, Layer } from "effect"
import { num } from "../config/Settings.js"

/**
 * The process's side of a graceful stop, next to `NodeRuntime.runMain` (which turns the first
 * SIGTERM or SIGINT into an interruption and then stops listening):
 * - the listeners stay for the life of the process, because a signal to the process group reaches
 *   node and its supervisor (npm forwards its own copy, Ctrl-C follows a SIGTERM), and a second
 *   signal without a listener would kill the drain half-way; later signals change nothing;
 * - a shutdown that outlives `timeoutSeconds` is cut short with exit 1, so a stuck peer cannot keep
 *   the process alive.
 */
export const guardShutdownSignals = (timeoutSeconds: number): Effect.Effect<void> =>
  Effect.sync(() => {
    let armed = false
    const arm = () => {
      if (armed) return
      armed = true
      setTimeout(() => {
        process.stderr.write(
          `${JSON.stringify({ level: "ERROR", message: "shutdown exceeded its budget; exiting", seconds: timeoutSeconds })}\n`
        )
        process.exit(1)
      }, timeoutSeconds * 1000).unref()
    }
    process.on("SIGTERM", arm)
    process.on("SIGINT", arm)
  })

/** `shutdown.timeout_seconds`: the hard exit after a signal. */
export const shutdownTimeoutSettings = Config.nested(Config.all({ timeoutSeconds: num("timeout_seconds", 10) }), "shutdown")

/** The signal guard for the life of the process (its listeners are never removed: see above). */
export const layer = (timeoutSeconds: number): Layer.Layer<never> => Layer.effectDiscard(guardShutdownSignals(timeoutSeconds))

/** The signal guard as `shutdown.timeout_seconds` says. */
export const layerConfig = Layer.unwrapEffect(Effect.map(shutdownTimeoutSettings, ({ timeoutSeconds }) => layer(timeoutSeconds)))
