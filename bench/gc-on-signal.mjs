// Preloaded into benchmarked processes started with --expose-gc: a full GC on SIGUSR2, so the bench
// can read RSS after garbage is gone. Kept out of the production entry point.
if (typeof globalThis.gc === "function") process.on("SIGUSR2", () => globalThis.gc())
