import { Scheduler } from "effect"

const mixed = new Scheduler.MixedScheduler(2048)

/**
 * Effect's default scheduler, with one run queue for all fibers as it had up to effect 3.19. Since
 * 3.20 the default keeps a runner per fiber in a WeakMap keyed by the fiber, and V8's scavenger
 * keeps WeakMap entries whose key is young alive: every chat batch's fiber then outlived a
 * scavenge, and some were promoted to the old generation, which only a mark-compact frees.
 * The chat path forks a fiber per batch, so it runs on this one (bench/README.md).
 */
export const sharedRunnerScheduler: Scheduler.Scheduler = Scheduler.make(
  (task, priority) => mixed.scheduleTask(task, priority, undefined),
  (fiber) => mixed.shouldYield(fiber)
)
