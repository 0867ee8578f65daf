import { Effect } from "effect"

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
