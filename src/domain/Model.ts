/**
 * The data the gateway moves around, shaped exactly like the wire messages
 * (lowerCamelCase fields, int64 as bigint) so adapters pass them through without copying.
 */

export interface User {
  readonly username: string
  readonly nickname: string
  readonly avatarUrl: string
}

export const SessionType = { Direct: 1, Group: 2, System: 3 } as const

export const MessageTypes = ["text", "image", "file", "system", "audio", "video"] as const
export type MessageType = (typeof MessageTypes)[number]

const messageTypes: ReadonlySet<string> = new Set(MessageTypes)

/** A chat's type as stored: "" (left out) is "text". */
export const messageTypeOf = (type: string): string => (type === "" ? "text" : type)

export const isMessageType = (type: string): type is MessageType => messageTypes.has(type)

export interface SessionMeta {
  readonly name: string
  readonly type: number
}

export interface ChatRequest {
  readonly sessionId: string
  readonly fromUsername: string
  readonly toUsername: string
  readonly content: string
  readonly type: string
  readonly timestamp: bigint
}

/** A stored chat as it is pushed and read back: the chat with its ids. */
export interface PushMessage extends ChatRequest {
  readonly msgId: bigint
  readonly seqId: bigint
  readonly sessionMeta: SessionMeta | undefined
}

export interface AckBody {
  readonly refSeq: string
  readonly msgId: bigint
  readonly seqId: bigint
  readonly sessionId: string
  readonly error: string
}

export interface ContactInfo {
  readonly username: string
  readonly nickname: string
  readonly avatarUrl: string
}

export interface SessionInfo {
  readonly sessionId: string
  readonly name: string
  readonly type: number
  readonly avatarUrl: string
  readonly unreadCount: bigint
  readonly lastReadSeq: bigint
  readonly lastMessage: PushMessage | undefined
}

/** One page of a user's sessions, most recently active first. */
export interface SessionPage {
  readonly sessions: ReadonlyArray<SessionInfo>
  /** Continues the list after this page; "" on the last one. */
  readonly nextPageToken: string
}

export interface InboxEvent {
  readonly inboxId: bigint
  readonly message: PushMessage | undefined
}

export interface AuthResult {
  readonly accessToken: string
  readonly user: User | undefined
}

export interface SendMessageResult {
  readonly msgId: bigint
  readonly seqId: bigint
}

export interface InboxPage {
  readonly events: ReadonlyArray<InboxEvent>
  readonly nextCursorId: bigint
  readonly hasMore: boolean
}

export interface UserOnline {
  readonly username: string
  readonly remoteIp: string
  readonly timestamp: bigint
}

export interface UserOffline {
  readonly username: string
  readonly timestamp: bigint
}

export interface PresenceBatch {
  readonly seqId: bigint
  readonly gatewayId: string
  readonly onlineBatch: ReadonlyArray<UserOnline>
  readonly offlineBatch: ReadonlyArray<UserOffline>
}

/** A token refused from now on (Logout), until it expires. */
export interface Revocation {
  /** Position in Logic's revocation log; increasing. */
  readonly cursor: bigint
  /** `tokenIdOf` the revoked token. */
  readonly tokenId: string
  readonly username: string
  /** Unix seconds. */
  readonly expiresAt: bigint
}

export interface RevocationPage {
  readonly revocations: ReadonlyArray<Revocation>
  readonly nextCursor: bigint
}
