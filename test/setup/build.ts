// Vitest global setup: the gateway's bundles (dist/*.mjs, dist/*.cjs) are what the end-to-end tests start, as
// `npm start` does; built once here, before any test file runs, when a source is newer.
export default async function setup() {
  const { buildIfStale } = await import("../../scripts/build.mjs")
  await buildIfStale()
}
