import { Scheduler } from "effect"

const mixed = new Scheduler.MixedScheduler(2048)

/**
 * Effect's default scheduler with one run queue for all fibers, as effect had it up to 3.19 (its
 * fallback runner); the embedded Logic resumes each chat batch on it after the WAL flush. Since
 * 3.20 the default keeps a runner per fiber in a WeakMap keyed by the fiber, and V8's scavenger
 * keeps WeakMap entries with a young key alive, so each batch's fiber (one per turn, made by the
 * Dispatcher) outlives at least one scavenge once it has waited for a commit. Measured on the chat
 * path (bench/README.md, "The chat path", `544a8a0`): the old generation grew 0.44–0.47 MB/s at
 * 2,000 msg/s with this against 0.35–0.9 without, p99 7.5–9.9 ms in five windows; the batch
 * fibers' own objects are still promoted either way, so this evens out the runs rather than
 * removing the cause.
 */
export const sharedRunnerScheduler: Scheduler.Scheduler = Scheduler.make(
  (task, priority) => mixed.scheduleTask(task, priority, undefined)
)
