import type * as Net from "node:net"
import * as V8 from "node:v8"
import { clientKeyOf } from "../../../domain/RateLimit.js"
import type {
  FrontDoorOptions,
  FrontDoorShape,
  FrontDoorStats,
  Listener,
  ListenerPolicy,
  ListenerStats,
  PressureLevel,
  ShedReason
} from "./Guard.js"
import { normalizeIp } from "./IpRules.js"
import type { Entry, ListenerImpl } from "./DoorEntry.js"
import { entryOf, kEntry } from "./DoorEntry.js"
import { loopIdleMs, makeLoopIdleReadings } from "./LoopIdle.js"

/**
 * The process's front door, in the spirit of Envoy's overload manager: every listener's
 * connections are counted against one budget below the descriptor limit, and near a budget
 * (descriptors, heap, RSS) what has shown nothing yet is shed first, oldest first, and the
 * timeouts of strangers shrink, so authenticated sockets, probes and new clients keep service.
 *
 * A connection is, for its listener: `fresh` (no complete request and no credentials yet),
 * `idle` or `busy` (it completed a request and has none / one in flight, no credentials), or
 * `trusted` (it presented credentials: an authenticated WebSocket, an admitted internal call).
 * Trusted connections are never shed; a listener that `requiresCredentials` (the internal gRPC
 * ports) closes an untrusted connection at its handshake deadline whatever it is doing.
 *
 * A reconnect storm looks like a flood at first: thousands of connections that have shown nothing
 * yet. Its clients have sent their requests, or will as soon as their own process gets to it, and
 * each one closed costs an official client one of its five tries. A real client's request comes
 * whole; a slow-loris sends part of one. So under pressure the handshake deadline shrinks at once
 * for a connection that has sent part of a request, but for one we have read nothing from only at
 * `critical`, and only once the event loop has been idle since it came: before that the loop may
 * not have read what the client sent (in a storm it serves upgrades for seconds in the order they
 * came). A silent connection is bounded by its handshake timeout, and at the budget the oldest
 * stranger is shed for each newcomer.
 */

const CRITICAL = 0.95
/** Handshake and idle timeouts of strangers under pressure: a real client sends its request within milliseconds. */
const ELEVATED_TIMEOUT_MS = 2_000
const CRITICAL_TIMEOUT_MS = 500
/** A busy stranger is shed to make room only once its request has had this long. */
const BUSY_GRACE_MS = 1_000
/** How long the pressure must stay under the threshold before strangers get their full timeouts back. */
const RELAX_MS = 30_000

function onSocketError() {}

export const makeFrontDoor = (
  options: FrontDoorOptions,
  say: (level: PressureLevel, stats: FrontDoorStats) => void = () => {},
  /** The loop's idle time so far, in ms (tests drive it); by default Node's event-loop utilization. */
  loopIdle: () => number = loopIdleMs
): FrontDoorShape & { readonly sweep: (now: number) => void; readonly close: () => void } => {
  const listeners: Array<ListenerImpl> = []
  const levelWatchers = new Set<(level: PressureLevel) => void>()
  let open = 0
  /** Of `open`, those the door has closed whose `close` event has not come yet. */
  let closing = 0
  let level: PressureLevel = "normal"
  let memoryPressure = 0
  /** The last sweep that found pressure. */
  let pressedAt = 0

  const pressure = () => Math.max(open / options.connectionBudget, memoryPressure)

  /** A stranger's timeout at the current level (one that has sent nothing: `expireFresh`). */
  const timeoutOf = (configured: number) =>
    level === "normal" ? configured : Math.min(configured, level === "critical" ? CRITICAL_TIMEOUT_MS : ELEVATED_TIMEOUT_MS)

  const loopReadings = makeLoopIdleReadings(loopIdle)

  const place = (entry: Entry, set: Set<Entry> | undefined, now: number) => {
    if (entry.set === set) return
    entry.set?.delete(entry)
    entry.set = set
    entry.since = now
    set?.add(entry)
  }

  /** Where an entry waits: decides its deadline and its rank for shedding. */
  const settle = (entry: Entry, now: number) => {
    // Closed by the door, its `close` event still to come: it waits nowhere.
    if (entry.socket.destroyed) return
    const l = entry.listener
    if (entry.trusted) place(entry, entry.inFlight > 0 ? undefined : l.trustedIdle, now)
    else if (!entry.served || l.policy.requiresCredentials) {
      if (entry.set !== l.fresh) place(entry, l.fresh, entry.acceptedAt)
    } else place(entry, entry.inFlight > 0 ? l.busy : l.idle, now)
  }

  const close = (entry: Entry, reason: ShedReason) => {
    if (!entry.closing) {
      entry.closing = true
      closing++
    }
    entry.listener.closed[reason] = (entry.listener.closed[reason] ?? 0) + 1
    const farewell = entry.listener.policy.farewell
    // A slow client (not a flood: those are shed) is told why; the write is left to the kernel.
    if (farewell !== undefined && reason === "handshake_timeout" && level === "normal") entry.socket.end(farewell)
    entry.socket.destroy()
    // Its `close` event comes later: it leaves its set now, or the next newcomer of the same turn
    // would pick it to shed again and be let in over the budget.
    place(entry, undefined, entry.since)
  }

  const forget = (entry: Entry) => {
    const l = entry.listener
    if (entry.closing) closing--
    entry.set?.delete(entry)
    entry.set = undefined
    open--
    l.open--
    if (entry.trusted) l.trusted--
    const count = (l.perKey.get(entry.key) ?? 1) - 1
    if (count <= 0) l.perKey.delete(entry.key)
    else l.perKey.set(entry.key, count)
  }

  /** The oldest stranger to shed to make room, in `scope`'s listeners: fresh first, then idle, then busy past a grace. */
  const victim = (scope: ReadonlyArray<ListenerImpl>, now: number): Entry | undefined => {
    for (const rank of ["fresh", "idle", "busy"] as const) {
      let oldest: Entry | undefined
      for (const l of scope) {
        const head = l[rank].values().next().value as Entry | undefined
        if (head !== undefined && (oldest === undefined || head.since < oldest.since)) oldest = head
      }
      if (oldest !== undefined && (rank !== "busy" || now - oldest.since >= BUSY_GRACE_MS)) return oldest
    }
    return undefined
  }

  const makeListener = (policy: ListenerPolicy): Listener => {
    const l: ListenerImpl = {
      policy: {
        ...policy,
        maxConnections: Math.min(policy.maxConnections > 0 ? policy.maxConnections : options.connectionBudget, options.connectionBudget)
      },
      perKey: new Map(),
      bans: new Map(),
      fresh: new Set(),
      idle: new Set(),
      busy: new Set(),
      trustedIdle: new Set(),
      peers: policy.byPeer === true ? new Map() : undefined,
      open: 0,
      trusted: 0,
      closed: {}
    }
    listeners.push(l)
    const refuse = (socket: Net.Socket, reason: ShedReason) => {
      l.closed[reason] = (l.closed[reason] ?? 0) + 1
      socket.on("error", onSocketError)
      socket.destroy()
      return false
    }

    /**
     * One `close` listener for every socket of this listener (no closure or once-wrapper each). The
     * socket forgets its entry, so a response that closes after its socket (`requestEnded`) cannot
     * put a closed connection back in a set, where it would be picked to shed in a live one's place.
     */
    const forgetOnClose = function(this: Net.Socket) {
      const record = this as unknown as Record<symbol, Entry | undefined>
      const entry = record[kEntry]
      if (entry === undefined) return
      record[kEntry] = undefined
      forget(entry)
      if (entry.peer !== undefined) l.peers!.delete(entry.peer)
    }

    const admit = (socket: Net.Socket): boolean => {
      const now = Date.now()
      const ip = normalizeIp(socket.remoteAddress ?? "") ?? ""
      const key = clientKeyOf(ip)
      const exempt = policy.exempt?.(ip) === true
      if (!exempt && l.bans.size > 0) {
        const until = l.bans.get(key)
        if (until !== undefined) {
          if (until > now) return refuse(socket, "banned")
          l.bans.delete(key)
        }
      }
      const fromKey = l.perKey.get(key) ?? 0
      if (!exempt && policy.maxPerAddress > 0 && fromKey >= policy.maxPerAddress) return refuse(socket, "per_address")
      if (open >= options.connectionBudget) {
        const shed = victim(listeners, now)
        if (shed === undefined) return refuse(socket, "budget")
        close(shed, "budget")
      } else if (l.open >= l.policy.maxConnections) {
        const shed = victim([l], now)
        if (shed === undefined) return refuse(socket, "listener_full")
        close(shed, "listener_full")
      }
      const peer = l.peers === undefined ? undefined : `${socket.remoteAddress}:${socket.remotePort}`
      const entry: Entry = { socket, listener: l, key, acceptedAt: now, since: now, inFlight: 0, served: false, trusted: false, set: undefined, closing: false, peer }
      ;(socket as unknown as Record<symbol, Entry>)[kEntry] = entry
      open++
      l.open++
      l.perKey.set(key, fromKey + 1)
      place(entry, l.fresh, now)
      if (peer !== undefined) l.peers!.set(peer, entry)
      socket.on("close", forgetOnClose)
      return true
    }

    const trust = (entry: Entry | undefined) => {
      if (entry === undefined || entry.trusted) return
      entry.trusted = true
      l.trusted++
      settle(entry, Date.now())
    }

    const onConnection = (socket: Net.Socket) => void admit(socket)

    return {
      policy: l.policy,
      guard: (server) => void server.prependListener("connection", onConnection),
      admit,
      requestStarted: (socket) => {
        const entry = entryOf(socket)
        if (entry === undefined) return
        entry.inFlight++
        entry.served = true
        if (entry.inFlight === 1) settle(entry, Date.now())
      },
      requestEnded: (socket) => {
        const entry = entryOf(socket)
        if (entry === undefined || entry.inFlight === 0) return
        if (--entry.inFlight === 0) settle(entry, Date.now())
      },
      trust: (socket) => trust(entryOf(socket)),
      trustPeer: (peer) => trust(l.peers?.get(peer)),
      ban: (socket, ms, graceMs = 0) => {
        const entry = entryOf(socket)
        if (entry !== undefined && policy.exempt?.(normalizeIp(socket.remoteAddress ?? "") ?? "") !== true) {
          if (l.bans.size >= 10_000) l.bans.delete(l.bans.keys().next().value!)
          l.bans.set(entry.key, Date.now() + ms)
        }
        if (entry === undefined) return void socket.destroy()
        if (graceMs <= 0) return close(entry, "banned")
        // Not shed meanwhile: it leaves its set now (as a close does) and is closed when the grace ends.
        place(entry, undefined, entry.since)
        setTimeout(() => {
          if (!socket.destroyed) close(entry, "banned")
        }, graceMs).unref()
      },
      inFlight: (socket) => entryOf(socket)?.inFlight ?? 0,
      stats: () => statsOf(l)
    }
  }

  const statsOf = (l: ListenerImpl): ListenerStats => ({
    name: l.policy.name,
    open: l.open,
    fresh: l.fresh.size,
    trusted: l.trusted,
    closed: { ...l.closed }
  })

  const stats = (): FrontDoorStats => ({
    maxOpenFiles: options.maxOpenFiles,
    connectionBudget: options.connectionBudget,
    open,
    level,
    pressure: pressure(),
    listeners: listeners.map(statsOf)
  })

  /** Closes per turn of the event loop: a wave of expired strangers is closed in slices, not in one long stall. */
  const SLICE = 256
  let quota = SLICE
  let resumeAt = 0

  /** Closes, oldest first, the entries of `set` whose `timeout` has passed, within this slice's quota; false when the quota ran out first. */
  const expire = (set: Set<Entry>, timeoutMs: number, now: number, reason: ShedReason): boolean => {
    if (timeoutMs <= 0) return true
    for (const entry of set) {
      if (now - entry.since < timeoutMs) return true
      if (quota === 0) return false
      quota--
      close(entry, reason)
    }
    return true
  }

  /**
   * `expire` for connections that have shown nothing: past `configuredMs` each is closed; past the
   * level's shorter deadline, one that sent part of a request, and at `critical` one we have read
   * nothing from once the loop has been idle since it came, and only as many as bring the count
   * back to the critical line (a storm near the budget loses no more of its clients than it must).
   */
  const expireFresh = (set: Set<Entry>, configuredMs: number, now: number): boolean => {
    if (configuredMs <= 0) return true
    const shortMs = timeoutOf(configuredMs)
    const silentSince = level === "critical" ? loopReadings.caughtUpSince() : -Infinity
    const criticalLine = Math.floor(CRITICAL * options.connectionBudget)
    for (const entry of set) {
      const age = now - entry.since
      if (age < shortMs) return true
      // Nothing read from it yet, and the loop may not have had its turn: its own deadline.
      if (age < configuredMs && entry.socket.bytesRead === 0 && (entry.since > silentSince || open - closing <= criticalLine)) continue
      if (quota === 0) return false
      quota--
      close(entry, "handshake_timeout")
    }
    return true
  }

  /** One slice of closing what expired at `now`; the rest in the next turn. */
  const closeExpired = (now: number) => {
    quota = SLICE
    let done = true
    for (const l of listeners) {
      done = expireFresh(l.fresh, l.policy.handshakeTimeoutMs, now) && done
      done = expire(l.idle, timeoutOf(l.policy.idleTimeoutMs), now, "idle_timeout") && done
      done = expire(l.trustedIdle, l.policy.trustedIdleTimeoutMs, now, "idle_timeout") && done
      // Short of memory, strangers go first, whatever their age.
      if (memoryPressure >= CRITICAL) {
        for (const set of [l.fresh, l.idle]) done = expire(set, 1, Infinity, "memory") && done
      }
    }
    if (!done && resumeAt !== now) {
      resumeAt = now
      setImmediate(() => {
        resumeAt = 0
        closeExpired(now)
      })
    }
  }

  const sweep = (now: number) => {
    loopReadings.read(now)
    const heap = V8.getHeapStatistics().used_heap_size / options.maxHeapBytes
    const rss = process.memoryUsage.rss() / options.maxRssBytes
    memoryPressure = Math.max(heap, rss)
    const current = pressure()
    let next: PressureLevel = current >= CRITICAL ? "critical" : current >= options.pressureThreshold ? "elevated" : "normal"
    // Shedding brings the count under the threshold at once: the shorter timeouts stay until the
    // flood has been gone a while, or its next wave would find the long ones again.
    if (next !== "normal") pressedAt = now
    else if (level !== "normal" && now - pressedAt < RELAX_MS) next = "elevated"
    if (next !== level) {
      level = next
      for (const watcher of levelWatchers) watcher(level)
      say(level, stats())
    }
    closeExpired(now)
  }

  const timer = setInterval(() => sweep(Date.now()), options.sweepIntervalMs ?? 250)
  timer.unref()

  return {
    options,
    listener: makeListener,
    level: () => level,
    onLevel: (f) => {
      levelWatchers.add(f)
      f(level)
      return () => void levelWatchers.delete(f)
    },
    stats,
    sweep,
    close: () => clearInterval(timer)
  }
}
