// Preloaded into benchmarked processes started with --expose-gc: a full GC on SIGUSR2, so the bench
// can read RSS after garbage is gone. Kept out of the production entry point.
// After the GC it says how big V8's young generation is (`bench-gc new_space=<bytes>`): that space
// grows in steps up to --max-semi-space-size whatever holds the memory, and the bench takes it out
// of the idle figure (bench/README.md, "The figures").
import { getHeapSpaceStatistics } from "node:v8"

if (typeof globalThis.gc === "function") {
  process.on("SIGUSR2", () => {
    globalThis.gc()
    const young = getHeapSpaceStatistics().find((space) => space.space_name === "new_space")
    process.stderr.write(`bench-gc new_space=${young?.space_size ?? 0}\n`)
  })
}
