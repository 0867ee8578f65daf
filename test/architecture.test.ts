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

const importsOf = (file: string) =>
  [...Fs.readFileSync(Path.join(root, file), "utf8").matchAll(/^\s*(?:import|export)[^"']*from\s+["']([^"']+)["']/gm)].map(
    (match) => match[1]!
  )

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
})
