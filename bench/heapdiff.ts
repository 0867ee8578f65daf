/**
 * What grew between two V8 heap snapshots, by constructor, per connection:
 *
 *   node --import tsx bench/heapdiff.ts before.heapsnapshot after.heapsnapshot [connections] [top]
 *
 * Snapshots come from `npm run bench -- --quick --heap` (bench/results/heap/).
 */
import * as Fs from "node:fs"

interface Snapshot {
  readonly snapshot: { readonly meta: { readonly node_fields: ReadonlyArray<string>; readonly node_types: ReadonlyArray<unknown> } }
  readonly nodes: ReadonlyArray<number>
  readonly strings: ReadonlyArray<string>
}

const summarize = (file: string) => {
  const heap = JSON.parse(Fs.readFileSync(file, "utf8")) as Snapshot
  const fields = heap.snapshot.meta.node_fields
  const types = heap.snapshot.meta.node_types[0] as ReadonlyArray<string>
  const width = fields.length
  const typeAt = fields.indexOf("type")
  const nameAt = fields.indexOf("name")
  const sizeAt = fields.indexOf("self_size")
  const groups = new Map<string, { count: number; size: number }>()
  let total = 0
  for (let i = 0; i < heap.nodes.length; i += width) {
    const type = types[heap.nodes[i + typeAt]!]!
    const name = heap.strings[heap.nodes[i + nameAt]!]!
    // Strings and code are grouped by kind: their "names" are their contents.
    const key = type === "object" || type === "native" || type === "closure" ? `${type} ${name}` : type
    const size = heap.nodes[i + sizeAt]!
    total += size
    const group = groups.get(key) ?? { count: 0, size: 0 }
    group.count++
    group.size += size
    groups.set(key, group)
  }
  return { groups, total }
}

const [beforeFile, afterFile, connectionsArg, topArg] = process.argv.slice(2)
if (beforeFile === undefined || afterFile === undefined) {
  process.stderr.write("usage: bench/heapdiff.ts before.heapsnapshot after.heapsnapshot [connections] [top]\n")
  process.exit(2)
}
const connections = Number(connectionsArg ?? 1)
const top = Number(topArg ?? 40)
const before = summarize(beforeFile)
const after = summarize(afterFile)
const rows: Array<{ key: string; count: number; size: number }> = []
for (const [key, group] of after.groups) {
  const old = before.groups.get(key) ?? { count: 0, size: 0 }
  rows.push({ key, count: group.count - old.count, size: group.size - old.size })
}
rows.sort((a, b) => b.size - a.size)
process.stdout.write(
  `JS heap grew ${((after.total - before.total) / 1024 / 1024).toFixed(1)} MiB: ` +
    `${((after.total - before.total) / connections).toFixed(0)} B per connection over ${connections}\n\n` +
    `${"B/conn".padStart(8)} ${"objs/conn".padStart(9)}  constructor\n`
)
for (const row of rows.slice(0, top)) {
  process.stdout.write(
    `${(row.size / connections).toFixed(0).padStart(8)} ${(row.count / connections).toFixed(2).padStart(9)}  ${row.key}\n`
  )
}
