import type { Prepare } from "./Statements.js"

export interface Member {
  readonly username: string
  readonly nickname: string
  readonly avatarUrl: string
  /** The session's max_seq when the member joined: their inbox starts after it. */
  readonly joinedSeq: bigint
}

export interface CachedSession {
  readonly sessionId: string
  readonly type: number
  readonly name: string
  readonly avatarUrl: string
  /** As written: a batch that rolls back clears the cache, which is then read again. */
  maxSeq: bigint
  lastMsgId: bigint
  /** Loaded on first use, then kept current by joins. */
  members: Map<string, Member> | undefined
  /** `members`' usernames, for fan-out; rebuilt after a join. */
  memberNames: ReadonlyArray<string> | undefined
}

interface SessionRow {
  readonly session_id: string
  readonly type: bigint
  readonly name: string
  readonly avatar_url: string
  readonly max_seq: bigint
  readonly last_msg_id: bigint
}

interface MemberRow {
  readonly username: string
  readonly nickname: string
  readonly avatar_url: string
  readonly joined_seq: bigint
}

/**
 * Sessions and their members in memory, so a message costs no read: the process holding the
 * database file is its only writer, and every write that changes a cached fact (a join, a new
 * session, a committed message) updates the cache too. Sessions unused for a while are dropped
 * past `capacity` and read again when needed.
 */
export const makeSessionCache = (prepare: Prepare, capacity = 100_000) => {
  const sessionRow = prepare<[string], SessionRow>(
    "SELECT session_id, type, name, avatar_url, max_seq, last_msg_id FROM sessions WHERE session_id = ?"
  )
  const memberRows = prepare<[string], MemberRow>(
    `SELECT sm.username, u.nickname, u.avatar_url, sm.joined_seq
     FROM session_members sm JOIN users u ON u.username = sm.username WHERE sm.session_id = ?`
  )
  // Two generations instead of a strict LRU: a hit in `recent` touches nothing (re-inserting
  // into one Map on every message churns its hash table), a hit in `older` moves the session up,
  // and when `recent` is full it becomes `older` and the old `older` is dropped. At most
  // `capacity` sessions are held; what was not used for a whole generation is read again.
  const generation = Math.max(1, Math.floor(capacity / 2))
  let recent = new Map<string, CachedSession>()
  let older = new Map<string, CachedSession>()

  const remember = (session: CachedSession) => {
    if (recent.size >= generation) {
      older = recent
      recent = new Map()
    }
    recent.set(session.sessionId, session)
    return session
  }

  const cached = (sessionId: string): CachedSession | undefined => recent.get(sessionId) ?? older.get(sessionId)

  const get = (sessionId: string): CachedSession | undefined => {
    const hot = recent.get(sessionId)
    if (hot !== undefined) return hot
    const warm = older.get(sessionId)
    if (warm !== undefined) {
      older.delete(sessionId)
      return remember(warm)
    }
    const row = sessionRow.get(sessionId)
    if (row === undefined) return undefined
    return remember({
      sessionId: row.session_id,
      type: Number(row.type),
      name: row.name,
      avatarUrl: row.avatar_url,
      maxSeq: row.max_seq,
      lastMsgId: row.last_msg_id,
      members: undefined,
      memberNames: undefined
    })
  }

  const membersOf = (session: CachedSession): Map<string, Member> => {
    if (session.members !== undefined) return session.members
    const members = new Map<string, Member>()
    for (const row of memberRows.all(session.sessionId)) {
      members.set(row.username, { username: row.username, nickname: row.nickname, avatarUrl: row.avatar_url, joinedSeq: row.joined_seq })
    }
    session.members = members
    return members
  }

  return {
    get,
    membersOf,
    /** A session just created (its members known). */
    add: (session: CachedSession) => {
      older.delete(session.sessionId)
      remember(session)
    },
    /** A member who just joined a session, if that session is cached with its members. */
    joined: (sessionId: string, member: Member) => {
      const session = cached(sessionId)
      if (session?.members === undefined) return
      session.members.set(member.username, member)
      session.memberNames = undefined
    },
    memberNames: (session: CachedSession): ReadonlyArray<string> =>
      (session.memberNames ??= Array.from(membersOf(session).keys())),
    /** After a rollback: what is cached may be ahead of the file. */
    clear: () => {
      recent.clear()
      older.clear()
    },
    /** The member of a direct session who is not `viewer`. */
    otherMember: (session: CachedSession, viewer: string): Member | undefined => {
      for (const member of membersOf(session).values()) if (member.username !== viewer) return member
      return undefined
    }
  }
}

export type SessionCache = ReturnType<typeof makeSessionCache>
