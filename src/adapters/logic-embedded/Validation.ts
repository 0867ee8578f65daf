import type { LogicError } from "../../domain/Errors.js"
import { logicError } from "../../domain/Errors.js"

export const USERNAME_MAX = 32
export const PASSWORD_MIN = 6
export const NICKNAME_MAX = 64

const USERNAME_PATTERN = /^[A-Za-z0-9_.-]+$/

export type Checked<A> = { readonly ok: true; readonly value: A } | { readonly ok: false; readonly error: LogicError }

const ok = <A>(value: A): Checked<A> => ({ ok: true, value })
const invalid = (message: string): Checked<never> => ({ ok: false, error: logicError("invalid_argument", message) })

export const checkUsername = (raw: string): Checked<string> => {
  const username = raw.trim()
  if (username.length === 0) return invalid("username must not be empty")
  if (username.length > USERNAME_MAX) return invalid(`username must be at most ${USERNAME_MAX} characters`)
  if (!USERNAME_PATTERN.test(username)) {
    return invalid("username may contain only letters, digits, '_', '.' and '-'")
  }
  return ok(username)
}

export const checkPassword = (password: string): Checked<string> => {
  if ([...password].length < PASSWORD_MIN) return invalid(`password must be at least ${PASSWORD_MIN} characters`)
  // bcrypt ignores everything after 72 bytes; refusing is safer than silently truncating.
  if (Buffer.byteLength(password, "utf8") > 72) return invalid("password must be at most 72 bytes")
  return ok(password)
}

/** An empty nickname means "use the username". */
export const checkNickname = (raw: string, username: string): Checked<string> => {
  const nickname = raw.trim()
  if (nickname.length === 0) return ok(username)
  if ([...nickname].length > NICKNAME_MAX) return invalid(`nickname must be at most ${NICKNAME_MAX} characters`)
  return ok(nickname)
}

/** LIKE pattern matching `query` anywhere, with `\` as the escape character. */
export const containsPattern = (query: string): string => `%${query.replace(/[\\%_]/g, (c) => `\\${c}`)}%`
export const prefixPattern = (query: string): string => `${query.replace(/[\\%_]/g, (c) => `\\${c}`)}%`
