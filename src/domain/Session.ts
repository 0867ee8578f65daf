import { SessionType } from "./Model.js"

export const SESSION_NAME_MAX = 64

/** `single:<x>:<y>` with the two usernames sorted, so both sides compute the same id. */
export const directSessionId = (a: string, b: string): string => (a < b ? `single:${a}:${b}` : `single:${b}:${a}`)

export const parseDirectSessionId = (sessionId: string): readonly [string, string] | undefined => {
  const parts = sessionId.split(":")
  if (parts.length !== 3 || parts[0] !== "single" || parts[1] === "" || parts[2] === "") return undefined
  return [parts[1]!, parts[2]!]
}

/** A session type left out (0) is inferred: one other member and no name is direct, else a group. */
export const inferSessionType = (otherMembers: number, name: string): number =>
  otherMembers === 1 && name.trim() === "" ? SessionType.Direct : SessionType.Group

const sessionTypes: ReadonlySet<number> = new Set(Object.values(SessionType))

/** A type a client may ask for: one of `SessionType`, or 0 to have it inferred. */
export const isRequestedSessionType = (type: number): boolean => type === 0 || sessionTypes.has(type)

/**
 * What a client creating a session must name: the other user of a direct session (and of one
 * whose type is left to inference), someone for a group; a system session names no one.
 */
export const missingMembersProblem = (type: number, members: ReadonlyArray<string>): string | undefined =>
  type === SessionType.System || members.length > 0
    ? undefined
    : type === SessionType.Group
    ? "members must not be empty for a group session"
    : "members must name the other user"

export interface SessionRules {
  /** Members of a group, its creator included. */
  readonly maxGroupMembers: number
}

/** The rules where nothing is configured: groups of up to 500. */
export const defaultSessionRules: SessionRules = { maxGroupMembers: 500 }

export interface SessionRequest {
  readonly creator: string
  readonly members: ReadonlyArray<string>
  readonly name: string
  /** 0: infer. */
  readonly type: number
}

export type SessionPlan =
  | { readonly _tag: "Invalid"; readonly message: string }
  | {
    readonly _tag: "Valid"
    readonly type: number
    /** Distinct, trimmed, the creator first. */
    readonly members: ReadonlyArray<string>
    /** "" for a direct session. */
    readonly name: string
  }

const invalid = (message: string): SessionPlan => ({ _tag: "Invalid", message })

/** What CreateSession will create, or why it is refused: the one place these rules live. */
export const planSession = (request: SessionRequest, rules: SessionRules): SessionPlan => {
  const creator = request.creator.trim()
  if (creator === "") return invalid("creator_username is required")
  const members = [...new Set([creator, ...request.members.map((member) => member.trim())])].filter((m) => m !== "")
  const type = request.type !== 0 ? request.type : inferSessionType(members.length - 1, request.name)
  if (type === SessionType.Direct) {
    if (members.length !== 2) return invalid("a direct session needs exactly one other member")
    return { _tag: "Valid", type, members, name: "" }
  }
  if (type !== SessionType.Group) return invalid(`unsupported session type ${type}`)
  const name = request.name.trim()
  if (name === "") return invalid("a group session needs a name")
  if ([...name].length > SESSION_NAME_MAX) return invalid(`session name must be at most ${SESSION_NAME_MAX} characters`)
  if (members.length > rules.maxGroupMembers) {
    return invalid(`a group may have at most ${rules.maxGroupMembers} members`)
  }
  return { _tag: "Valid", type, members, name }
}
