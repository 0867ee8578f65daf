/** Reads claims of a JWT without verifying it; verification is the Logic's job. */
export interface TokenClaims {
  readonly sub: string | undefined
  /** Unix milliseconds, when the token carries `exp`. */
  readonly expiresAt: number | undefined
}

export const readClaims = (token: string): TokenClaims | undefined => {
  const parts = token.split(".")
  if (parts.length !== 3) return undefined
  try {
    const json = atob(parts[1]!.replace(/-/g, "+").replace(/_/g, "/"))
    const claims = JSON.parse(json) as unknown
    if (typeof claims !== "object" || claims === null) return undefined
    const { sub, exp } = claims as { sub?: unknown; exp?: unknown }
    return {
      sub: typeof sub === "string" ? sub : undefined,
      expiresAt: typeof exp === "number" ? exp * 1000 : undefined
    }
  } catch {
    return undefined
  }
}
