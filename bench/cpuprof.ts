/**
 * Summarises a `.cpuprofile` (from `npm run bench -- --profile`), optionally only the samples of one
 * phase marked in bench/results/details.json:
 *
 *   node --import tsx bench/cpuprof.ts bench/results/profiles/gateway-1/CPU…0.001.cpuprofile [phase|all] [top] [details.json]
 *
 * Prints self time by function and total time by source file.
 */
import * as Fs from "node:fs"
import * as Path from "node:path"

interface ProfileNode {
  readonly id: number
  readonly callFrame: { readonly functionName: string; readonly url: string; readonly lineNumber: number }
  readonly children?: ReadonlyArray<number>
}
interface Profile {
  readonly nodes: ReadonlyArray<ProfileNode>
  readonly startTime: number
  readonly samples: ReadonlyArray<number>
  readonly timeDeltas: ReadonlyArray<number>
}

// `| head` closes the pipe early; that is not an error.
process.stdout.on("error", (error: NodeJS.ErrnoException) => {
  if (error.code === "EPIPE") process.exit(0)
  throw error
})

const [file, phase, topArg, detailsArg] = process.argv.slice(2)
if (file === undefined) {
  process.stderr.write("usage: bench/cpuprof.ts <file.cpuprofile> [phase|all] [top] [details.json]\n")
  process.exit(2)
}
const profile = JSON.parse(Fs.readFileSync(file, "utf8")) as Profile
const top = Number(topArg ?? 30)

let window: { fromUs: number; toUs: number } | undefined
if (phase !== undefined && phase !== "all") {
  // The newer of a full and a partial run's details, unless one is named.
  const candidates = ["results/details.json", "results/details-partial.json"]
    .map((name) => Path.resolve(import.meta.dirname, name))
    .filter((name) => Fs.existsSync(name))
    .sort((a, b) => Fs.statSync(b).mtimeMs - Fs.statSync(a).mtimeMs)
  const detailsFile = detailsArg ?? candidates[0]
  if (detailsFile === undefined) throw new Error("no bench/results/details*.json; name one")
  const details = JSON.parse(Fs.readFileSync(detailsFile, "utf8")) as {
    marks: Array<{ phase: string; fromUs: number; toUs: number }>
  }
  window = details.marks.find((mark) => mark.phase === phase)
  if (window === undefined) throw new Error(`no phase ${phase}; known: ${details.marks.map((m) => m.phase).join(", ")}`)
}

const byId = new Map(profile.nodes.map((node) => [node.id, node]))
const parent = new Map<number, number>()
for (const node of profile.nodes) for (const child of node.children ?? []) parent.set(child, node.id)

const label = (node: ProfileNode) => {
  const { functionName, lineNumber, url } = node.callFrame
  return `${functionName || "(anonymous)"} ${url.replace(/^.*node_modules\//, "~/").replace(/^file:\/\/.*?\/(src|bench)\//, "$1/")}:${lineNumber + 1}`
}
const fileOf = (node: ProfileNode) => {
  const url = node.callFrame.url
  if (url === "") return `(${node.callFrame.functionName || "native"})`
  const inModules = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(url)
  if (inModules !== null) return `~/${inModules[1]}`
  return url.replace(/^file:\/\/.*?\/(src|bench)\//, "$1/")
}

const self = new Map<string, number>()
const selfByFile = new Map<string, number>()
const inclusive = new Map<string, number>()
const files = new Map<string, number>()
let total = 0
let time = profile.startTime
for (let i = 0; i < profile.samples.length; i++) {
  time += profile.timeDeltas[i] ?? 0
  if (window !== undefined && (time < window.fromUs || time > window.toUs)) continue
  const delta = profile.timeDeltas[i + 1] ?? 0
  const node = byId.get(profile.samples[i]!)!
  total += delta
  self.set(label(node), (self.get(label(node)) ?? 0) + delta)
  selfByFile.set(fileOf(node), (selfByFile.get(fileOf(node)) ?? 0) + delta)
  // Each file and function counted once per sample, however deep it recurses.
  const seen = new Set<string>()
  for (let id: number | undefined = node.id; id !== undefined; id = parent.get(id)) {
    const frame = byId.get(id)!
    const name = fileOf(frame)
    const fn = label(frame)
    if (!seen.has(name)) {
      seen.add(name)
      files.set(name, (files.get(name) ?? 0) + delta)
    }
    if (!seen.has(fn)) {
      seen.add(fn)
      inclusive.set(fn, (inclusive.get(fn) ?? 0) + delta)
    }
  }
}

const print = (title: string, entries: Map<string, number>) => {
  process.stdout.write(`\n${title}\n`)
  for (const [name, us] of [...entries].sort((a, b) => b[1] - a[1]).slice(0, top)) {
    process.stdout.write(`${(us / 1000).toFixed(0).padStart(8)} ms ${((100 * us) / total).toFixed(1).padStart(5)} %  ${name}\n`)
  }
}
process.stdout.write(`${file}${window ? ` phase ${phase}` : ""}: ${(total / 1000).toFixed(0)} ms sampled\n`)
print("self time by function", self)
print("self time by file", selfByFile)
print("total time by file (inclusive)", files)
print("total time by function (inclusive)", inclusive)
