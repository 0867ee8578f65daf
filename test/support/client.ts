/** A small Connect JSON client, as the official web client calls the gateway. */
export const connectCall = async (
  baseUrl: string,
  path: string,
  body: unknown,
  token?: string
): Promise<{ status: number; body: any }> => {
  const response = await fetch(`${baseUrl}${path}`, {
    method: "POST",
    headers: {
      "content-type": "application/json",
      "connect-protocol-version": "1",
      ...(token !== undefined ? { authorization: `Bearer ${token}` } : {})
    },
    body: JSON.stringify(body)
  })
  const text = await response.text()
  return { status: response.status, body: text === "" ? undefined : JSON.parse(text) }
}

export const auth = (baseUrl: string, method: "Login" | "Register", body: Record<string, string>) =>
  connectCall(baseUrl, `/resonance.gateway.v1.AuthService/${method}`, body)

export const session = (baseUrl: string, method: string, body: unknown, token: string) =>
  connectCall(baseUrl, `/resonance.gateway.v1.SessionService/${method}`, body, token)
