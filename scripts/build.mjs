// The gateway and the reference Logic as one ES module each (dist/*.mjs), bundled by esbuild:
// `npm start` runs JavaScript, not a TypeScript loader (which cost ~2 s of every start), and one
// file loads faster than the hundreds of modules it is made of. `npm ci` builds it (`prepare`);
// `npm start` builds it again when a source is newer (`buildIfStale`).
import * as Fs from "node:fs"
import * as Path from "node:path"
import { fileURLToPath } from "node:url"

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

const outputOf = (name) => Path.join(dist, `${name}.mjs`)

/** Whether a bundle is missing or older than a source it is built from. */
export const isStale = () => {
  const sources = Math.max(newest(Path.join(root, "src")), Fs.statSync(Path.join(root, "package-lock.json")).mtimeMs)
  return Object.keys(entries).some((name) => !Fs.existsSync(outputOf(name)) || Fs.statSync(outputOf(name)).mtimeMs < sources)
}

export const build = async () => {
  const esbuild = await import("esbuild")
  await esbuild.build({
    absWorkingDir: root,
    entryPoints: Object.fromEntries(Object.entries(entries).map(([name, file]) => [name, Path.join(root, file)])),
    outdir: dist,
    outExtension: { ".js": ".mjs" },
    bundle: true,
    platform: "node",
    format: "esm",
    target: "node20",
    external,
    sourcemap: true,
    // Bundled CommonJS packages call require(); an ES module has none of its own.
    banner: { js: "import { createRequire as __createRequire } from 'node:module'; const require = __createRequire(import.meta.url);" },
    logLevel: "warning"
  })
}

export const buildIfStale = async () => {
  if (isStale()) await build()
}

if (process.argv[1] === fileURLToPath(import.meta.url)) await build()
