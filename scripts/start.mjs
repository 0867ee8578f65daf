// `npm start` / `npm run logic`: runs dist/<entry>.mjs in this process, rebuilt first when a
// source is newer than it (a developer's edit), so the command never runs stale code.
import { pathToFileURL } from "node:url"
import * as Path from "node:path"
import { buildIfStale, root } from "./build.mjs"

const entry = process.argv[2] ?? "main"
await buildIfStale()
await import(pathToFileURL(Path.join(root, "dist", `${entry}.mjs`)).href)
