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

/** Close codes the gateway uses, with the reason a client can act on. */
export const CloseCodes = {
  Normal: 1000,
  GoingAway: 1001,
  UnsupportedData: 1003,
  InvalidPayload: 1007,
  PolicyViolation: 1008,
  MessageTooBig: 1009,
  InternalError: 1011,
  ServiceRestart: 1012,
  TryAgainLater: 1013,
  /** Application range: the token expired, log in again. */
  TokenExpired: 4001,
  /** Application range: a newer device of the same user replaced this one. */
  DeviceLimit: 4002,
  /** Application range: the client does not read fast enough. */
  SlowConsumer: 4003,
  /** Application range: too many frames per second. */
  RateLimited: 4008
} as const

export type CloseCode = (typeof CloseCodes)[keyof typeof CloseCodes]
