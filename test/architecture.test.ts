import { describe, expect, it } from "vitest"
import * as Fs from "node:fs"
import * as Path from "node:path"

const root = Path.resolve(import.meta.dirname, "..")

const sources = (folder: string): Array<string> =>
  Fs.readdirSync(Path.join(root, folder), { withFileTypes: true }).flatMap((entry) =>
    entry.isDirectory()
      ? sources(Path.join(folder, entry.name))
      : entry.name.endsWith(".ts") ? [Path.join(folder, entry.name)] : []
  )

/** Every module a file imports: `import … from`, `export … from`, side-effect `import "x"` and `import("x")`. */
const importsIn = (text: string) =>
  [
    ...text.matchAll(/^\s*(?:import|export)[^"'`;]*?from\s+["']([^"']+)["']/gm),
    ...text.matchAll(/^\s*import\s+["']([^"']+)["']/gm),
    ...text.matchAll(/\bimport\(\s*["']([^"']+)["']\s*\)/g)
  ].map((match) => match[1]!)

const importsOf = (file: string) => importsIn(Fs.readFileSync(Path.join(root, file), "utf8"))

/** The adapter folder (`src/adapters/<name>`) a file is in, or that a relative import from it lands in. */
const adapterOf = (file: string): string | undefined => {
  const parts = Path.relative(Path.join(root, "src", "adapters"), Path.resolve(root, file)).split(Path.sep)
  return parts.length > 1 && parts[0] !== ".." ? parts[0] : undefined
}

describe("the hexagon's rules", () => {
  it("src/domain imports nothing but effect and itself", () => {
    const offenders = sources("src/domain").flatMap((file) =>
      importsOf(file).filter((spec) => spec !== "effect" && !spec.startsWith("./")).map((spec) => `${file}: ${spec}`)
    )
    expect(offenders).toEqual([])
  })

  it("src/application imports no driver, no Node module, no adapter and no generated code", () => {
    const forbidden = /^(ws|@grpc\/|etcd3|better-sqlite3|prom-client|@opentelemetry\/|node:|jose|bcryptjs)|\/adapters\/|\/gen\//
    const offenders = sources("src/application").flatMap((file) =>
      importsOf(file).filter((spec) => forbidden.test(spec)).map((spec) => `${file}: ${spec}`)
    )
    expect(offenders).toEqual([])
  })

  it("generated protobuf code is used only by adapters", () => {
    const outside = [...sources("src/domain"), ...sources("src/application"), "src/main.ts", "src/logic-main.ts"]
    const offenders = outside.flatMap((file) => importsOf(file).filter((spec) => spec.includes("/gen/")).map((spec) => `${file}: ${spec}`))
    expect(offenders).toEqual([])
    expect(sources("src/adapters").some((file) => importsOf(file).some((spec) => spec.includes("/gen/")))).toBe(true)
  })

  it("src/application imports neither the Node platform nor YAML", () => {
    const offenders = sources("src/application").flatMap((file) =>
      importsOf(file).filter((spec) => /^(@effect\/platform-node|yaml)(\/|$)/.test(spec)).map((spec) => `${file}: ${spec}`)
    )
    expect(offenders).toEqual([])
  })

  it("no adapter imports another adapter; only the composition root composes them", () => {
    // `platform/` is the plumbing adapters share (configuration, gRPC, network, process), not an adapter.
    const shared = new Set(["platform"])
    const offenders = sources("src/adapters").flatMap((file) => {
      const own = adapterOf(file)!
      return importsOf(file)
        .filter((spec) => spec.startsWith("."))
        .map((spec) => adapterOf(Path.join(Path.dirname(file), spec)))
        .filter((target) => target !== undefined && target !== own && !shared.has(target))
        .map((target) => `${file}: ${target}`)
    })
    expect(offenders).toEqual([])
  })

  it("the scan sees every kind of import, and which adapter a relative one lands in", () => {
    const text = 'import "./a.js"\nconst b = () => import("./b.js")\nexport { c } from "./c.js"\nimport type {\n  D\n} from "../d.js"\n'
    expect(importsIn(text).sort()).toEqual(["../d.js", "./a.js", "./b.js", "./c.js"])
    expect(adapterOf(Path.join("src/adapters/ws", "../etcd/Client.js"))).toBe("etcd")
    expect(adapterOf(Path.join("src/adapters/ws", "../platform/net/NodeServer.js"))).toBe("platform")
    expect(adapterOf(Path.join("src/adapters/ws", "../../domain/Token.js"))).toBeUndefined()
  })

  it("no file in src/ outside src/gen is longer than 400 lines", () => {
    const tooLong = sources("src")
      .filter((file) => !file.startsWith(Path.join("src", "gen") + Path.sep))
      .map((file) => ({ file, lines: Fs.readFileSync(Path.join(root, file), "utf8").split("\n").length - 1 }))
      .filter(({ lines }) => lines > 400)
    expect(tooLong).toEqual([])
  })
})

describe("the bundles npm start runs", () => {
  // The global setup builds them. One non-ASCII character anywhere makes V8 hold the whole 4.8 MB
  // source as a two-byte string; with it ASCII a start costs ~60 ms less CPU (scripts/run-bundle.mjs).
  it("are ASCII, so V8 holds their source one byte a character", () => {
    for (const name of ["main.cjs", "logic.cjs"]) {
      const text = Fs.readFileSync(Path.join(root, "dist", name), "latin1")
      const at = text.search(/[^\x00-\x7f]/)
      expect(at === -1 ? "" : `${name}: ${JSON.stringify(text.slice(Math.max(0, at - 60), at + 20))}`).toBe("")
    }
  })
})
