/**
 * What the PresenceBatcher costs a reconnect storm per online event, in a fresh process:
 *
 *   node --import tsx bench/presence-batcher.ts [events=18000] [batchSize=50]
 *
 * The events are offered 30 per turn of the event loop (a storm's connects arrive a few per turn),
 * to a Logic whose syncStatus only counts them, so the figure is the batcher's own: its fibers,
 * its batches and its metrics call. CPU is `process.cpuUsage()` (every thread: V8 compiling the
 * batcher's code counts) from the first offer until 300 ms after the last, past the last batch's
 * flush interval. See bench/README, "Storm CPU per connect".
 */
import { Effect, Layer, Schedule } from "effect"
import { ConnectionHub } from "../src/application/ConnectionHub.js"
import { GatewayIdentity } from "../src/application/ports/GatewayIdentity.js"
import { Logic } from "../src/application/ports/Logic.js"
import { Metrics } from "../src/application/ports/Metrics.js"
import { PresenceBatcher } from "../src/application/PresenceBatcher.js"

const events = Number(process.argv[2] ?? 18_000)
const batchSize = Number(process.argv[3] ?? 50)
const PER_TURN = 30

let sent = 0
let batches = 0
const logic = Logic.layerTest({
  syncStatus: (batch) =>
    Effect.sync(() => {
      sent += batch.onlineBatch.length
      batches++
    })
})
const layer = PresenceBatcher.layer({ batchSize, flushInterval: "100 millis", retry: Schedule.exponential("100 millis") }).pipe(
  Layer.provideMerge(Layer.mergeAll(logic, GatewayIdentity.layer("gateway-bench"), ConnectionHub.layer, Metrics.layerNoop))
)

const program = Effect.gen(function*() {
  const presence = yield* PresenceBatcher
  const usernames = Array.from({ length: events }, (_, i) => `user${i}`)
  const started = process.cpuUsage()
  yield* Effect.async<void>((resume) => {
    let next = 0
    const turn = () => {
      for (const end = Math.min(events, next + PER_TURN); next < end; next++) presence.online(usernames[next]!, "10.0.0.1")
      if (next < events) setImmediate(turn)
      else setTimeout(() => resume(Effect.void), 300)
    }
    turn()
  })
  const used = process.cpuUsage(started)
  if (sent !== events) throw new Error(`${events} events offered, ${sent} sent`)
  process.stdout.write(
    `${events} online events, ${batches} batches of up to ${batchSize}: ` +
      `${((used.user + used.system) / events).toFixed(2)} µs of CPU per event\n`
  )
})

Effect.runPromise(Effect.scoped(Effect.provide(program, layer))).catch((error) => {
  process.stderr.write(`${String(error)}\n`)
  process.exit(1)
})
