import type Database from "better-sqlite3"


export const ROOM_SESSION_ID = "0"
export const ROOM_NAME = "Resonance Room"

const V1 = `
CREATE TABLE IF NOT EXISTS users (
  username      TEXT PRIMARY KEY,
  password_hash TEXT NOT NULL,
  nickname      TEXT NOT NULL,
  avatar_url    TEXT NOT NULL DEFAULT '',
  created_at    INTEGER NOT NULL
);

CREATE TABLE IF NOT EXISTS sessions (
  session_id     TEXT PRIMARY KEY,
  type           INTEGER NOT NULL,
  name           TEXT NOT NULL DEFAULT '',
  avatar_url     TEXT NOT NULL DEFAULT '',
  creator        TEXT NOT NULL DEFAULT '',
  max_seq        INTEGER NOT NULL DEFAULT 0,
  created_at     INTEGER NOT NULL,
  last_active_at INTEGER NOT NULL
);

CREATE TABLE IF NOT EXISTS session_members (
  session_id    TEXT NOT NULL REFERENCES sessions(session_id),
  username      TEXT NOT NULL REFERENCES users(username),
  last_read_seq INTEGER NOT NULL DEFAULT 0,
  joined_at     INTEGER NOT NULL,
  PRIMARY KEY (session_id, username)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS session_members_by_user ON session_members(username, session_id);

CREATE TABLE IF NOT EXISTS messages (
  session_id    TEXT NOT NULL REFERENCES sessions(session_id),
  seq_id        INTEGER NOT NULL,
  msg_id        INTEGER NOT NULL UNIQUE,
  from_username TEXT NOT NULL,
  to_username   TEXT NOT NULL DEFAULT '',
  content       TEXT NOT NULL,
  type          TEXT NOT NULL,
  timestamp     INTEGER NOT NULL,
  PRIMARY KEY (session_id, seq_id)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS inbox (
  inbox_id   INTEGER PRIMARY KEY AUTOINCREMENT,
  username   TEXT NOT NULL,
  session_id TEXT NOT NULL,
  seq_id     INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS inbox_by_user ON inbox(username, inbox_id);

CREATE TABLE IF NOT EXISTS presence (
  username   TEXT NOT NULL,
  gateway_id TEXT NOT NULL,
  remote_ip  TEXT NOT NULL DEFAULT '',
  since      INTEGER NOT NULL,
  PRIMARY KEY (username, gateway_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS presence_by_gateway ON presence(gateway_id);
`

/** Logout: the tokens refused until they expire, in the order they were revoked. */
const V2 = `
CREATE TABLE IF NOT EXISTS revoked_tokens (
  cursor     INTEGER PRIMARY KEY AUTOINCREMENT,
  token_id   TEXT NOT NULL UNIQUE,
  username   TEXT NOT NULL,
  expires_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS revoked_tokens_by_expiry ON revoked_tokens(expires_at);
`

/**
 * The inbox on the read side (docs/inbox-read-side.md): a member's inbox is derived from the
 * messages after the position they joined at, so a message writes one row, not one per member.
 * The old inbox table stays, read-only, to translate cursors handed out before.
 */
const V3 = `
ALTER TABLE session_members ADD COLUMN joined_seq INTEGER NOT NULL DEFAULT 0;
UPDATE session_members SET joined_seq = COALESCE(
  (SELECT MIN(i.seq_id) - 1 FROM inbox i WHERE i.username = session_members.username AND i.session_id = session_members.session_id),
  last_read_seq
);
ALTER TABLE sessions ADD COLUMN last_msg_id INTEGER NOT NULL DEFAULT 0;
UPDATE sessions SET last_msg_id = COALESCE((SELECT MAX(m.msg_id) FROM messages m WHERE m.session_id = sessions.session_id), 0);
ALTER TABLE messages ADD COLUMN client_key TEXT;
CREATE UNIQUE INDEX IF NOT EXISTS messages_by_client_key ON messages(from_username, client_key) WHERE client_key IS NOT NULL;
CREATE INDEX IF NOT EXISTS messages_by_session_msg ON messages(session_id, msg_id);
`

/** Migration n brings a file at version n - 1 to version n; append, never edit. */
const migrations: ReadonlyArray<string> = [V1, V2, V3]

export const SCHEMA_VERSION = migrations.length

export type MigrationOutcome =
  | { readonly _tag: "Ready"; readonly from: number }
  | { readonly _tag: "TooNew"; readonly found: number }

/** Creates or upgrades the schema (to `target`: tests build older files) in one transaction and seeds the shared room. */
export const migrate = (db: Database.Database, nowMs: number, target = SCHEMA_VERSION): MigrationOutcome => {
  const found = Number(db.pragma("user_version", { simple: true }))
  if (found > SCHEMA_VERSION) return { _tag: "TooNew", found }
  db.transaction(() => {
    for (const migration of migrations.slice(found, target)) db.exec(migration)
    db.prepare(
      `INSERT OR IGNORE INTO sessions (session_id, type, name, created_at, last_active_at) VALUES (?, 2, ?, ?, ?)`
    ).run(ROOM_SESSION_ID, ROOM_NAME, nowMs, nowMs)
    db.pragma(`user_version = ${Math.max(found, target)}`)
  }).immediate()
  return { _tag: "Ready", from: found }
}
