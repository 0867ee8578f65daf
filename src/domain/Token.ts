/** An HS256 key shorter than its hash (256 bits) is guessable offline from any token. */
export const MIN_SECRET_BYTES = 32

/** Reads claims of a JWT without verifying it; verification is the Logic's job. */
export interface TokenClaims {
  readonly sub: string | undefined
  /** Unix milliseconds, when the token carries `exp`. */
  readonly expiresAt: number | undefined
  /** The token's own id, when it carries `jti`. */
  readonly jti: string | undefined
}

export const readClaims = (token: string): TokenClaims | undefined => {
  const parts = token.split(".")
  if (parts.length !== 3) return undefined
  try {
    const json = atob(parts[1]!.replace(/-/g, "+").replace(/_/g, "/"))
    const claims = JSON.parse(json) as unknown
    if (typeof claims !== "object" || claims === null) return undefined
    const { sub, exp, jti } = claims as { sub?: unknown; exp?: unknown; jti?: unknown }
    return {
      sub: typeof sub === "string" ? sub : undefined,
      expiresAt: typeof exp === "number" ? exp * 1000 : undefined,
      jti: typeof jti === "string" && jti !== "" ? jti : undefined
    }
  } catch {
    return undefined
  }
}

/**
 * What a revocation names: the token's `jti`, or the whole token when it has none (a revoked
 * token is worthless, so keeping it is harmless). Every gateway and Logic computes it this way.
 */
export const tokenIdOf = (token: string, claims: TokenClaims | undefined = readClaims(token)): string =>
  claims?.jti ?? token

/**
 * The access token of a request: `Bearer <token>` (any case) or, as the Go gateway accepts, the
 * bare token; undefined when absent or blank.
 */
export const tokenFromAuthorization = (header: string | undefined): string | undefined => {
  if (header === undefined) return undefined
  const trimmed = header.trim()
  if (trimmed.toLowerCase() === "bearer") return undefined
  const token = trimmed.length > 7 && trimmed.slice(0, 7).toLowerCase() === "bearer " ? trimmed.slice(7).trim() : trimmed
  return token === "" || token.includes(" ") ? undefined : token
}
