import type { UserOffline, UserOnline } from "./Model.js"

export type PresenceEvent =
  | { readonly _tag: "Online"; readonly username: string; readonly remoteIp: string; readonly timestamp: bigint }
  | { readonly _tag: "Offline"; readonly username: string; readonly timestamp: bigint }

export const online = (username: string, remoteIp: string, timestamp: bigint): PresenceEvent => ({
  _tag: "Online",
  username,
  remoteIp,
  timestamp
})

export const offline = (username: string, timestamp: bigint): PresenceEvent => ({ _tag: "Offline", username, timestamp })

export interface FoldedPresence {
  readonly online: ReadonlyArray<UserOnline>
  readonly offline: ReadonlyArray<UserOffline>
}

/**
 * Folds events into one batch: per user the last event wins, since Logic only needs the
 * state each user ends in; users keep the order of their last event.
 */
export const foldPresence = (events: Iterable<PresenceEvent>): FoldedPresence => {
  const last = new Map<string, PresenceEvent>()
  for (const event of events) {
    last.delete(event.username)
    last.set(event.username, event)
  }
  const onlineBatch: Array<UserOnline> = []
  const offlineBatch: Array<UserOffline> = []
  for (const event of last.values()) {
    if (event._tag === "Online") {
      onlineBatch.push({ username: event.username, remoteIp: event.remoteIp, timestamp: event.timestamp })
    } else {
      offlineBatch.push({ username: event.username, timestamp: event.timestamp })
    }
  }
  return { online: onlineBatch, offline: offlineBatch }
}
