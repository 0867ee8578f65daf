/** A live client connection as the domain sees it; a user may hold several. */
export interface ConnectionInfo {
  readonly id: number
  readonly username: string
  readonly remoteAddress: string
  readonly connectedAt: number
  /** Unix milliseconds at which the credential of this connection stops being valid, if known. */
  readonly expiresAt: number | undefined
  /** `tokenIdOf` the credential, so a revocation finds the sockets opened with it. */
  readonly tokenId: string
}

/** Close codes the gateway sends, with the reason a client can act on. */
export const CloseCodes = {
  UnsupportedData: 1003,
  InvalidPayload: 1007,
  ServiceRestart: 1012,
  /** Application range: the token expired, log in again. */
  TokenExpired: 4001,
  /** Application range: a newer device of the same user replaced this one. */
  DeviceLimit: 4002,
  /** Application range: too many frames per second. */
  RateLimited: 4008
} as const
