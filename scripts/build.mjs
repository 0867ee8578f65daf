// The gateway and the reference Logic as one bundle each, by esbuild: `npm start` runs
// JavaScript, not a TypeScript loader (which cost ~2 s of every start), and one file loads faster
// than the hundreds of modules it is made of. `npm ci` builds them (`prepare`); `npm start` builds
// them again when a source is newer (`buildIfStale`). Each entry is two files: dist/<entry>.cjs,
// the bundle (CommonJS, so that V8's code cache can be used: see run-bundle.mjs), and
// dist/<entry>.mjs, what one runs (`node dist/main.mjs`), which loads it with that cache.
import * as Fs from "node:fs"
import * as Path from "node:path"
import { fileURLToPath } from "node:url"
import { removeCaches } from "./run-bundle.mjs"

export const root = Path.resolve(Path.dirname(fileURLToPath(import.meta.url)), "..")
export const entries = { main: "src/main.ts", logic: "src/logic-main.ts" }
const dist = Path.join(root, "dist")

/** Native addons, and etcd3, which loads its .proto files from its own folder at run time. */
const external = ["better-sqlite3", "bcrypt", "etcd3"]

const newest = (dir) => {
  let latest = 0
  for (const entry of Fs.readdirSync(dir, { withFileTypes: true })) {
    const path = Path.join(dir, entry.name)
    latest = Math.max(latest, entry.isDirectory() ? newest(path) : Fs.statSync(path).mtimeMs)
  }
  return latest
}

const outputOf = (name) => Path.join(dist, `${name}.cjs`)
const launcherOf = (name) => Path.join(dist, `${name}.mjs`)

const launcher = (name) =>
  `// Made by scripts/build.mjs: runs ${name}.cjs, the bundle, with V8's code cache (scripts/run-bundle.mjs).
import { runBundle } from "../scripts/run-bundle.mjs"
runBundle(new URL("./${name}.cjs", import.meta.url))
`

/** What a bundle is made with besides src/: the dependencies' lock, and how it is built and run. */
const recipe = ["package-lock.json", "scripts/build.mjs", "scripts/run-bundle.mjs"]

/** Whether a bundle is missing or older than a source it is built from. */
export const isStale = () => {
  const sources = Math.max(newest(Path.join(root, "src")), ...recipe.map((file) => Fs.statSync(Path.join(root, file)).mtimeMs))
  return Object.keys(entries).some(
    (name) => !Fs.existsSync(launcherOf(name)) || !Fs.existsSync(outputOf(name)) || Fs.statSync(outputOf(name)).mtimeMs < sources
  )
}

export const build = async () => {
  const esbuild = await import("esbuild")
  removeCaches(dist)
  await esbuild.build({
    absWorkingDir: root,
    entryPoints: Object.fromEntries(Object.entries(entries).map(([name, file]) => [name, Path.join(root, file)])),
    outdir: dist,
    outExtension: { ".js": ".cjs" },
    bundle: true,
    platform: "node",
    format: "cjs",
    target: "node20",
    external,
    // import() of an external (etcd3, loaded only in cluster mode) becomes a require().
    supported: { "dynamic-import": false },
    // The sources are ES modules; in a CommonJS bundle import.meta.url is the bundle's own URL.
    define: { "import.meta.url": "__bundle_url" },
    banner: { js: "const __bundle_url = require('node:url').pathToFileURL(__filename).href;" },
    sourcemap: true,
    logLevel: "warning"
  })
  for (const name of Object.keys(entries)) Fs.writeFileSync(launcherOf(name), launcher(name))
}

export const buildIfStale = async () => {
  if (isStale()) await build()
}

if (process.argv[1] === fileURLToPath(import.meta.url)) await build()
