// Runs a CommonJS bundle (dist/<entry>.cjs) in this process with V8's code cache: the compiled
// code of the functions a start ran is kept beside the bundle and handed to V8 on the next start,
// which then neither parses the 4.8 MB bundle nor compiles those functions again. Measured on the
// 2-core machine (exec to /healthz, embedded mode): 390 ms of CPU without the cache, 270 ms with
// it; compiling the bundle took 110–140 ms of that, reading the cache takes ~40 ms. A restarted
// gateway is ready sooner for every client waiting to reconnect. Node 20 has no code cache for ES
// modules (module.enableCompileCache came in 22.1), hence a CommonJS bundle run through vm.Script.
//
// The cache is written by the first start that has none (or whose cache V8 refused: another Node
// version or other V8 flags), a few seconds in, so it holds what serving compiled too. Its name
// carries the bundle's size and time, the Node version and its flags (NODE_OPTIONS too); `npm run
// build` removes the old ones. A cache that cannot be read or written (a read-only dist/) costs
// only the speed-up.
import { createHash } from "node:crypto"
import * as Fs from "node:fs"
import { createRequire } from "node:module"
import Module from "node:module"
import * as Path from "node:path"
import { fileURLToPath } from "node:url"
import * as Vm from "node:vm"

/** How long after the start the cache is written, when there was none to use. */
const writeAfterMs = 3_000

/** Node's own profiling options: they do not change V8's code, and a profiled start should be as warm as a real one. */
const profiling = /^--(cpu-prof|heap-prof|diagnostic-dir)/

const cacheFileOf = (file) => {
  const stat = Fs.statSync(file)
  // Flags reach V8 from the command line and from NODE_OPTIONS alike.
  const flags = [...process.execArgv, ...(process.env.NODE_OPTIONS ?? "").split(/\s+/)].filter((flag) => flag !== "" && !profiling.test(flag))
  const key = createHash("sha256")
    .update(JSON.stringify([stat.size, stat.mtimeMs, process.version, process.arch, flags]))
    .digest("hex")
    .slice(0, 16)
  return `${file}.${key}.v8cache`
}

const readOrUndefined = (file) => {
  try {
    return Fs.readFileSync(file)
  } catch {
    return undefined
  }
}

const writeAtomically = (file, data) => {
  const temporary = `${file}.${process.pid}.tmp`
  try {
    Fs.writeFileSync(temporary, data)
    Fs.renameSync(temporary, file)
  } catch {
    Fs.rmSync(temporary, { force: true })
  }
}

/** Runs the bundle at `url` as the main program's module. */
export const runBundle = (url) => {
  const file = fileURLToPath(url)
  const cacheFile = cacheFileOf(file)
  const cachedData = readOrUndefined(cacheFile)
  // Read, then decoded: Node 20's readFileSync(file, "utf8") took 50-68 ms for the 4.8 MB bundle,
  // the two steps 33 ms. The bundle is ASCII (a test keeps it so), so V8 holds it one byte a char.
  const script = new Vm.Script(Module.wrap(Fs.readFileSync(file).toString("utf8")), {
    filename: file,
    cachedData,
    importModuleDynamically: Vm.constants.USE_MAIN_CONTEXT_DEFAULT_LOADER
  })
  if (cachedData === undefined || script.cachedDataRejected === true) {
    setTimeout(() => writeAtomically(cacheFile, script.createCachedData()), writeAfterMs).unref()
  }
  const module = new Module(file)
  module.filename = file
  module.paths = Module._nodeModulePaths(Path.dirname(file))
  const run = script.runInThisContext()
  run.call(module.exports, module.exports, createRequire(file), module, file, Path.dirname(file))
}

/** Removes the caches of the bundles in `dir` (their bundles are being rebuilt). */
export const removeCaches = (dir) => {
  if (!Fs.existsSync(dir)) return
  for (const name of Fs.readdirSync(dir)) {
    if (name.endsWith(".v8cache") || name.endsWith(".tmp")) Fs.rmSync(Path.join(dir, name), { force: true })
  }
}
