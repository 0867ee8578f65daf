import type Database from "better-sqlite3"
import { Effect } from "effect"
import type { LogicShape } from "../../application/ports/Logic.js"
import type { LogicError } from "../../domain/Errors.js"
import { logicError } from "../../domain/Errors.js"
import type { PresenceBatch } from "../../domain/Model.js"
import type { Prepare } from "./Statements.js"
import { attempt } from "./Storage.js"

export interface PresenceStore {
  readonly syncStatus: LogicShape["syncStatus"]
  /** For each given user online somewhere, the gateways holding their connections. Plain: per message. */
  readonly onlineGateways: (usernames: ReadonlyArray<string>) => ReadonlyMap<string, ReadonlySet<string>>
  /** Forgets every user a gateway reported (it went away); how many entries were dropped. */
  readonly forgetGateway: (gatewayId: string) => Effect.Effect<number, LogicError>
}

/**
 * Which gateway holds which user, for the reference Logic's pushes: indexed in memory, so finding
 * a message's recipients costs no SQL, and stored when `store` says so (the reference Logic
 * service: its restart keeps the routes of gateways that live on). Entries are per (user,
 * gateway): an offline from one gateway never removes the user's route through another.
 *
 * In embedded mode (`store: false`) the gateway and this Logic are one process: nothing routes
 * through these entries (PushDelivery finds sockets in the hub) and none outlives the process that
 * holds the sockets, so writing them costs a reconnect storm a transaction per batch for rows that
 * would only be stale when read (an 18,000-client restart: 360 transactions, each dirtying up to 50
 * pages). The index stays in memory; rows a reference Logic left in the file are not read.
 */
export const makePresence = (
  db: Database.Database,
  prepare: Prepare,
  options: { readonly store: boolean } = { store: true }
): Effect.Effect<PresenceStore, LogicError> =>
  Effect.gen(function*() {
    const statements = yield* attempt("preparing presence", () => ({
      up: prepare<[string, string, string, bigint]>(
        `INSERT INTO presence (username, gateway_id, remote_ip, since) VALUES (?, ?, ?, ?)
         ON CONFLICT (username, gateway_id) DO UPDATE SET remote_ip = excluded.remote_ip, since = excluded.since`
      ),
      down: prepare<[string, string]>("DELETE FROM presence WHERE username = ? AND gateway_id = ?"),
      dropGateway: prepare<[string]>("DELETE FROM presence WHERE gateway_id = ?"),
      all: prepare<[], { readonly username: string; readonly gateway_id: string }>("SELECT username, gateway_id FROM presence")
    }))
    // Nearly every user is online through one gateway (in embedded mode there is only one): those
    // share one set per gateway, never changed, instead of a set each (~150 bytes per online user).
    const alone = new Map<string, ReadonlySet<string>>()
    const aloneOn = (gatewayId: string) => {
      let only = alone.get(gatewayId)
      if (only === undefined) alone.set(gatewayId, (only = new Set([gatewayId])))
      return only
    }
    const byUser = new Map<string, ReadonlySet<string>>()
    const add = (username: string, gatewayId: string) => {
      const gateways = byUser.get(username)
      if (gateways === undefined) return void byUser.set(username, aloneOn(gatewayId))
      if (gateways.has(gatewayId)) return
      // A second gateway: the user gets a set of their own.
      byUser.set(username, new Set([...gateways, gatewayId]))
    }
    const remove = (username: string, gatewayId: string) => {
      const gateways = byUser.get(username)
      if (gateways === undefined || !gateways.has(gatewayId)) return
      if (gateways.size === 1) return void byUser.delete(username)
      const rest = [...gateways].filter((id) => id !== gatewayId)
      byUser.set(username, rest.length === 1 ? aloneOn(rest[0]!) : new Set(rest))
    }
    if (options.store) {
      for (const row of yield* attempt("loading presence", () => statements.all.all())) add(row.username, row.gateway_id)
    }

    const syncTx = db.transaction((batch: PresenceBatch) => {
      for (const event of batch.offlineBatch) statements.down.run(event.username, batch.gatewayId)
      for (const event of batch.onlineBatch) statements.up.run(event.username, batch.gatewayId, event.remoteIp, event.timestamp)
    })

    const missingGateway = logicError("invalid_argument", "gateway_id is required")
    const apply = (batch: PresenceBatch) => {
      for (const event of batch.offlineBatch) remove(event.username, batch.gatewayId)
      for (const event of batch.onlineBatch) add(event.username, batch.gatewayId)
    }

    const syncStatus: PresenceStore["syncStatus"] = options.store
      ? Effect.fn("LogicEmbedded.syncStatus")(function*(batch) {
        if (batch.gatewayId === "") return yield* Effect.fail(missingGateway)
        yield* attempt("syncStatus", () => syncTx.immediate(batch))
        apply(batch)
      })
      : (batch) =>
        Effect.suspend(() => {
          if (batch.gatewayId === "") return Effect.fail(missingGateway)
          apply(batch)
          return Effect.void
        })

    const onlineGateways: PresenceStore["onlineGateways"] = (usernames) => {
      const found = new Map<string, ReadonlySet<string>>()
      for (const username of usernames) {
        const gateways = byUser.get(username)
        if (gateways !== undefined) found.set(username, gateways)
      }
      return found
    }

    const forgetGateway: PresenceStore["forgetGateway"] = (gatewayId) =>
      attempt("forgetGateway", () => {
        const stored = options.store ? statements.dropGateway.run(gatewayId).changes : 0
        let held = 0
        for (const [username, gateways] of byUser) {
          if (gateways.has(gatewayId)) {
            held++
            remove(username, gatewayId)
          }
        }
        alone.delete(gatewayId)
        return options.store ? stored : held
      })

    return { syncStatus, onlineGateways, forgetGateway }
  })
