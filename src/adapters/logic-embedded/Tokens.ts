import { randomBytes } from "node:crypto"
import * as fs from "node:fs"
import * as path from "node:path"

export const SECRET_FILE_NAME = "jwt-secret"

/**
 * The secret kept next to the database, created once (mode 0600) so tokens survive restarts.
 * Creation uses O_EXCL, so two processes starting together end up with the same secret.
 */
export const loadOrCreateSecret = (databasePath: string): string => {
  if (databasePath === ":memory:" || databasePath === "") return randomBytes(32).toString("hex")
  const file = path.join(path.dirname(path.resolve(databasePath)), SECRET_FILE_NAME)
  const fresh = randomBytes(32).toString("hex")
  try {
    fs.writeFileSync(file, fresh + "\n", { flag: "wx", mode: 0o600 })
    return fresh
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== "EEXIST") throw error
  }
  const stored = fs.readFileSync(file, "utf8").trim()
  if (stored.length < 32) throw new Error(`${file} holds no usable secret (fewer than 32 characters)`)
  return stored
}
