import type { LevelResult } from "./protocol.js"
import type { FaultResult, RestartResult } from "./restart.js"

/** The published figures, numbers only: the keys of issue 7 and those issue 11 added. */
export interface Latest {
  readonly idle: {
    readonly connections: number
    /** RSS per socket without the young generation's growth (`rss_*`: with it, the figure before 2026-12-07). */
    readonly bytes_per_connection: number
    readonly ratio_vs_raw_ws: number
    readonly rss_bytes_per_connection: number
    readonly rss_ratio_vs_raw_ws: number
  }
  /** `ratio_vs_raw_ws`: frames per server CPU-second, the gateway's over the baseline's. */
  readonly fanout: { readonly deliveries_per_s: number; readonly ratio_vs_raw_ws: number; readonly deliveries_per_s_ratio: number }
  readonly e2e: { readonly p50_ms: number; readonly p99_ms: number; readonly acked_per_s: number; readonly idle_sockets_held: number }
  /** At the e2e fixed point: per direct-session chat, warm-up included. */
  readonly chat: {
    readonly cpu_us_per_message: number
    readonly sql_statements_per_message: number
    readonly sql_transactions_per_message: number
    /** The same at the 1,000 msg/s level. */
    readonly cpu_us_per_message_1000: number
    /** The baseline's chat floor (decode, ack, push; nothing stored), measured the same way at the same levels. */
    readonly raw_floor: { readonly cpu_us_per_message_1000: number; readonly cpu_us_per_message_2000: number }
    /** The gateway's CPU per chat over the floor's (issue 27: ≤ 2.5 at both). */
    readonly ratio_vs_raw_floor: { readonly cpu_per_message_1000: number; readonly cpu_per_message_2000: number }
  }
  readonly room: {
    readonly members: number
    readonly online: number
    readonly rows_written_per_message: number
    readonly cpu_us_per_message: number
    readonly p99_ms: number
  }
  /**
   * `ratio_vs_raw_ws`: the gateway's accepted connects per second over the baseline's, and its
   * server CPU per authenticated connect over the baseline's (issue 27: ≥ 0.9 and ≤ 1.5).
   */
  readonly storm: {
    readonly connects_per_s: number
    readonly presence_rpcs_per_1000_connects: number
    readonly cpu_us_per_connect: number
    readonly ratio_vs_raw_ws: { readonly accepted_per_s: number; readonly cpu_per_connect: number }
  }
  readonly restart: RestartLatest
  readonly machine: { readonly cores: number; readonly node: string; readonly date: string }
}

/** One fault of the restart phase, in seconds from the signal unless named otherwise. */
export interface FaultLatest {
  readonly exit_s: number
  readonly healthz_s: number
  readonly ready_s: number
  /** Time from a client's drop until it is connected again; a client never back counts as infinite. */
  readonly back_p50_s: number
  readonly back_p99_s: number
  /** The same from the signal. */
  readonly back_p99_from_signal_s: number
  readonly back_within_15s_share: number
  readonly gave_up: number
  readonly failed_tries: number
}

export interface RestartLatest {
  readonly clients: number
  readonly kill: FaultLatest & { readonly p99_ratio_vs_raw_ws: number }
  readonly term: FaultLatest
  readonly raw_kill: FaultLatest
}

const faultLatest = (r: FaultResult): FaultLatest => ({
  exit_s: round(r.exitS, 2),
  healthz_s: round(r.healthzS, 2),
  ready_s: round(r.readyzS, 2),
  back_p50_s: round(r.fromDrop.p50, 2),
  back_p99_s: round(r.fromDrop.p99, 2),
  back_p99_from_signal_s: round(r.fromSignal.p99, 2),
  back_within_15s_share: round(r.shareWithin15s, 4),
  gave_up: r.gaveUp,
  failed_tries: r.failedTries
})

export const restartLatest = (r: RestartResult): RestartLatest => ({
  clients: r.clients,
  kill: { ...faultLatest(r.gateway.kill), p99_ratio_vs_raw_ws: round(r.gateway.kill.fromDrop.p99 / r.raw.kill.fromDrop.p99, 2) },
  term: faultLatest(r.gateway.term),
  raw_kill: faultLatest(r.raw.kill)
})

/** The restart rows with the targets (issue 27, "Judged by"). */
export const restartRows = (r: RestartLatest): Array<Row> => {
  const s = (value: number) => (Number.isFinite(value) ? value.toFixed(2) : String(value))
  const share = (value: number) => `${(value * 100).toFixed(2)} %`
  return [
    { metric: "restart.clients", gateway: String(r.clients), raw: String(r.clients), target: "", verdict: "" },
    { metric: "restart.kill.ready_s", gateway: s(r.kill.ready_s), raw: s(r.raw_kill.ready_s), target: "<= 1.5", verdict: verdict(r.kill.ready_s <= 1.5) },
    { metric: "restart.kill.healthz_s", gateway: s(r.kill.healthz_s), raw: s(r.raw_kill.healthz_s), target: "", verdict: "" },
    { metric: "restart.kill.back_p50_s", gateway: s(r.kill.back_p50_s), raw: s(r.raw_kill.back_p50_s), target: "", verdict: "" },
    { metric: "restart.kill.back_p99_s", gateway: s(r.kill.back_p99_s), raw: s(r.raw_kill.back_p99_s), target: "", verdict: "" },
    {
      metric: "restart.kill.p99_ratio_vs_raw_ws",
      gateway: s(r.kill.p99_ratio_vs_raw_ws),
      raw: "1",
      target: "<= 1.3",
      verdict: verdict(r.kill.p99_ratio_vs_raw_ws <= 1.3)
    },
    {
      metric: "restart.kill.back_within_15s",
      gateway: share(r.kill.back_within_15s_share),
      raw: share(r.raw_kill.back_within_15s_share),
      target: ">= 99.9 %",
      verdict: verdict(r.kill.back_within_15s_share >= 0.999)
    },
    { metric: "restart.kill.gave_up", gateway: String(r.kill.gave_up), raw: String(r.raw_kill.gave_up), target: "0", verdict: verdict(r.kill.gave_up === 0) },
    { metric: "restart.term.exit_s", gateway: s(r.term.exit_s), raw: "", target: "", verdict: "" },
    { metric: "restart.term.ready_s", gateway: s(r.term.ready_s), raw: "", target: "", verdict: "" },
    { metric: "restart.term.back_p50_s", gateway: s(r.term.back_p50_s), raw: "", target: "", verdict: "" },
    { metric: "restart.term.back_p99_s", gateway: s(r.term.back_p99_s), raw: "", target: "", verdict: "" },
    {
      metric: "restart.term.back_within_15s",
      gateway: share(r.term.back_within_15s_share),
      raw: "",
      target: ">= 99.9 %",
      verdict: verdict(r.term.back_within_15s_share >= 0.999)
    },
    { metric: "restart.term.gave_up", gateway: String(r.term.gave_up), raw: "", target: "0", verdict: verdict(r.term.gave_up === 0) }
  ]
}

export interface Row {
  readonly metric: string
  readonly gateway: string
  readonly raw: string
  readonly target: string
  readonly verdict: string
}

export const round = (value: number, digits = 0): number => {
  if (!Number.isFinite(value)) return value
  const scale = 10 ** digits
  return Math.round(value * scale) / scale
}

const verdict = (ok: boolean | undefined) => (ok === undefined ? "" : ok ? "ok" : "MISS")

export const rows = (
  latest: Latest,
  raw: { idleBytes: number; fanoutRate: number; stormRate: number; stormCpuUsPerConnect: number }
): Array<Row> => [
  {
    metric: "idle.connections",
    gateway: String(latest.idle.connections),
    raw: String(latest.idle.connections),
    target: "",
    verdict: ""
  },
  {
    metric: "idle.bytes_per_connection",
    gateway: String(latest.idle.bytes_per_connection),
    raw: String(round(raw.idleBytes)),
    target: "<= 8192",
    verdict: verdict(latest.idle.bytes_per_connection <= 8192)
  },
  {
    metric: "idle.ratio_vs_raw_ws",
    gateway: String(latest.idle.ratio_vs_raw_ws),
    raw: "1",
    target: "<= 1.5",
    verdict: verdict(latest.idle.ratio_vs_raw_ws <= 1.5)
  },
  {
    metric: "fanout.deliveries_per_s",
    gateway: String(latest.fanout.deliveries_per_s),
    raw: String(round(raw.fanoutRate)),
    target: "",
    verdict: ""
  },
  {
    metric: "fanout.ratio_vs_raw_ws",
    gateway: String(latest.fanout.ratio_vs_raw_ws),
    raw: "1",
    target: ">= 0.9",
    verdict: verdict(latest.fanout.ratio_vs_raw_ws >= 0.9)
  },
  { metric: "e2e.p50_ms", gateway: String(latest.e2e.p50_ms), raw: "", target: "", verdict: "" },
  {
    metric: "e2e.p99_ms",
    gateway: String(latest.e2e.p99_ms),
    raw: "",
    target: "<= 10",
    verdict: verdict(latest.e2e.p99_ms <= 10)
  },
  { metric: "e2e.acked_per_s", gateway: String(latest.e2e.acked_per_s), raw: "", target: "", verdict: "" },
  {
    metric: "chat.cpu_us_per_message",
    gateway: String(latest.chat.cpu_us_per_message),
    raw: String(latest.chat.raw_floor.cpu_us_per_message_2000),
    target: "",
    verdict: ""
  },
  {
    metric: "chat.cpu_us_per_message_1000",
    gateway: String(latest.chat.cpu_us_per_message_1000),
    raw: String(latest.chat.raw_floor.cpu_us_per_message_1000),
    target: "",
    verdict: ""
  },
  {
    metric: "chat.ratio_vs_raw_floor.cpu_per_message_1000",
    gateway: String(latest.chat.ratio_vs_raw_floor.cpu_per_message_1000),
    raw: "1",
    target: "<= 2.5",
    verdict: verdict(latest.chat.ratio_vs_raw_floor.cpu_per_message_1000 <= 2.5)
  },
  {
    metric: "chat.ratio_vs_raw_floor.cpu_per_message_2000",
    gateway: String(latest.chat.ratio_vs_raw_floor.cpu_per_message_2000),
    raw: "1",
    target: "<= 2.5",
    verdict: verdict(latest.chat.ratio_vs_raw_floor.cpu_per_message_2000 <= 2.5)
  },
  {
    metric: "chat.sql_statements_per_message",
    gateway: String(latest.chat.sql_statements_per_message),
    raw: "",
    target: "<= 3",
    verdict: verdict(latest.chat.sql_statements_per_message <= 3)
  },
  {
    metric: "room.rows_written_per_message",
    gateway: String(latest.room.rows_written_per_message),
    raw: "",
    target: "<= 3",
    verdict: verdict(latest.room.rows_written_per_message <= 3)
  },
  { metric: "room.cpu_us_per_message", gateway: String(latest.room.cpu_us_per_message), raw: "", target: "", verdict: "" },
  { metric: "room.p99_ms", gateway: String(latest.room.p99_ms), raw: "", target: "", verdict: "" },
  {
    metric: "storm.connects_per_s",
    gateway: String(latest.storm.connects_per_s),
    raw: String(round(raw.stormRate)),
    target: "",
    verdict: ""
  },
  {
    metric: "storm.ratio_vs_raw_ws.accepted_per_s",
    gateway: String(latest.storm.ratio_vs_raw_ws.accepted_per_s),
    raw: "1",
    target: ">= 0.9",
    verdict: verdict(latest.storm.ratio_vs_raw_ws.accepted_per_s >= 0.9)
  },
  {
    metric: "storm.cpu_us_per_connect",
    gateway: String(latest.storm.cpu_us_per_connect),
    raw: String(round(raw.stormCpuUsPerConnect)),
    target: "",
    verdict: ""
  },
  {
    metric: "storm.ratio_vs_raw_ws.cpu_per_connect",
    gateway: String(latest.storm.ratio_vs_raw_ws.cpu_per_connect),
    raw: "1",
    target: "<= 1.5",
    verdict: verdict(latest.storm.ratio_vs_raw_ws.cpu_per_connect <= 1.5)
  },
  {
    metric: "storm.presence_rpcs_per_1000_connects",
    gateway: String(latest.storm.presence_rpcs_per_1000_connects),
    raw: "",
    target: "<= 25",
    verdict: verdict(latest.storm.presence_rpcs_per_1000_connects <= 25)
  },
  ...restartRows(latest.restart)
]

export const table = (header: ReadonlyArray<string>, body: ReadonlyArray<ReadonlyArray<string>>): string => {
  const widths = header.map((title, column) => Math.max(title.length, ...body.map((row) => (row[column] ?? "").length)))
  const line = (cells: ReadonlyArray<string>) =>
    cells.map((cell, column) => (column === 0 ? cell.padEnd(widths[column]!) : cell.padStart(widths[column]!))).join("  ")
  return [line(header), widths.map((width) => "-".repeat(width)).join("  "), ...body.map(line)].join("\n")
}

const escapeXml = (text: string) => text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;")

/**
 * Latency percentiles against offered load, both axes logarithmic, hand-written SVG.
 * The knee shows as the point where p99 leaves the p50 line and climbs past the 10 ms target.
 */
export const latencySvg = (
  levels: ReadonlyArray<LevelResult>,
  subtitle: string,
  marks: { readonly fixedRate: number; readonly saturation: number }
): string => {
  const width = 720
  const height = 440
  const margin = { left: 70, right: 150, top: 50, bottom: 60 }
  const plotW = width - margin.left - margin.right
  const plotH = height - margin.top - margin.bottom
  const series = [
    { key: "p50", color: "#1b9e77" },
    { key: "p90", color: "#7570b3" },
    { key: "p99", color: "#d95f02" },
    { key: "p999", color: "#e7298a" }
  ] as const
  const values = levels.flatMap((level) => series.map((s) => level[s.key])).filter((v) => Number.isFinite(v) && v > 0)
  const yMin = 10 ** Math.floor(Math.log10(Math.min(0.5, ...values)))
  const yMax = 10 ** Math.ceil(Math.log10(Math.max(50, ...values)))
  const rates = levels.map((level) => level.offeredRate)
  const xMin = Math.min(...rates) / 1.25
  const xMax = Math.max(...rates, Number.isFinite(marks.saturation) ? marks.saturation : 0) * 1.25
  const x = (rate: number) => margin.left + (Math.log(rate / xMin) / Math.log(xMax / xMin)) * plotW
  const y = (ms: number) =>
    margin.top + plotH - (Math.log10(Math.max(ms, yMin) / yMin) / Math.log10(yMax / yMin)) * plotH
  const out: Array<string> = []
  out.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="12">`,
    `<rect width="${width}" height="${height}" fill="#ffffff"/>`,
    `<text x="${margin.left}" y="22" font-size="15" font-weight="bold">e2e latency (chat sent → push received) vs offered load</text>`,
    `<text x="${margin.left}" y="38" fill="#555">${escapeXml(subtitle)}</text>`
  )
  for (let decade = yMin; decade <= yMax * 1.0001; decade *= 10) {
    const py = y(decade)
    out.push(
      `<line x1="${margin.left}" x2="${margin.left + plotW}" y1="${py}" y2="${py}" stroke="#ddd"/>`,
      `<text x="${margin.left - 8}" y="${py + 4}" text-anchor="end">${decade >= 1 ? decade : decade.toPrecision(1)}</text>`
    )
  }
  for (const rate of rates) {
    const px = x(rate)
    out.push(
      `<line x1="${px}" x2="${px}" y1="${margin.top}" y2="${margin.top + plotH}" stroke="#eee"/>`,
      `<text x="${px}" y="${margin.top + plotH + 18}" text-anchor="middle">${rate}</text>`
    )
  }
  out.push(
    `<rect x="${margin.left}" y="${margin.top}" width="${plotW}" height="${plotH}" fill="none" stroke="#999"/>`,
    `<text x="${margin.left + plotW / 2}" y="${height - 15}" text-anchor="middle">offered load (chat messages/s, log scale)</text>`,
    `<text transform="translate(18 ${margin.top + plotH / 2}) rotate(-90)" text-anchor="middle">latency, ms (log scale)</text>`
  )
  const fixedX = x(marks.fixedRate)
  out.push(
    `<line x1="${fixedX}" x2="${fixedX}" y1="${margin.top}" y2="${margin.top + plotH}" stroke="#888" stroke-dasharray="2 3"/>`,
    `<text x="${fixedX - 4}" y="${margin.top + plotH - 6}" text-anchor="end" fill="#555">reported point</text>`
  )
  if (Number.isFinite(marks.saturation) && marks.saturation > 0) {
    const satX = x(marks.saturation)
    out.push(
      `<line x1="${satX}" x2="${satX}" y1="${margin.top}" y2="${margin.top + plotH}" stroke="#333" stroke-dasharray="8 4"/>`,
      `<text x="${satX - 4}" y="${margin.top + 14}" text-anchor="end" fill="#333">saturation ${Math.round(marks.saturation)} acks/s</text>`
    )
  }
  const target = y(10)
  out.push(
    `<line x1="${margin.left}" x2="${margin.left + plotW}" y1="${target}" y2="${target}" stroke="#c00" stroke-dasharray="6 4"/>`,
    `<text x="${margin.left + 4}" y="${target + 14}" fill="#c00">p99 target 10 ms</text>`
  )
  series.forEach((s, index) => {
    const points = levels.filter((level) => Number.isFinite(level[s.key]))
    const path = points.map((level) => `${x(level.offeredRate).toFixed(1)},${y(level[s.key]).toFixed(1)}`).join(" ")
    out.push(`<polyline points="${path}" fill="none" stroke="${s.color}" stroke-width="2"/>`)
    for (const level of points) {
      out.push(
        `<circle cx="${x(level.offeredRate).toFixed(1)}" cy="${y(level[s.key]).toFixed(1)}" r="3.5" fill="${s.color}"><title>${s.key} at ${level.offeredRate}/s: ${level[s.key].toFixed(2)} ms</title></circle>`
      )
    }
    const legendY = margin.top + 14 + index * 20
    out.push(
      `<line x1="${margin.left + plotW + 15}" x2="${margin.left + plotW + 40}" y1="${legendY - 4}" y2="${legendY - 4}" stroke="${s.color}" stroke-width="2"/>`,
      `<text x="${margin.left + plotW + 46}" y="${legendY}">${s.key === "p999" ? "p99.9" : s.key}</text>`
    )
  })
  const notesY = margin.top + 110
  out.push(`<text x="${margin.left + plotW + 15}" y="${notesY}" font-weight="bold">delivered/s</text>`)
  levels.forEach((level, index) => {
    out.push(
      `<text x="${margin.left + plotW + 15}" y="${notesY + 18 + index * 16}">${level.offeredRate}: ${Math.round(level.deliveredRate)}</text>`
    )
  })
  out.push("</svg>")
  return out.join("\n") + "\n"
}
