import { Context, Duration, Effect, Layer } from "effect"
import type { AuthError, LogicError } from "../domain/Errors.js"
import { logicError } from "../domain/Errors.js"
import type { AuthResult } from "../domain/Model.js"
import type { Principal } from "./Authenticator.js"
import { Authenticator } from "./Authenticator.js"
import type { LoginRefused } from "./LoginGuard.js"
import { makeLoginGuard } from "./LoginGuard.js"
import type { LoginInput, RegisterInput } from "./ports/Logic.js"
import { Logic } from "./ports/Logic.js"

export interface AccountsOptions {
  /** Failed logins of one username from one address within `failureWindow` before that pair is refused; 0 = unlimited. */
  readonly failuresPerUserAndAddress?: number
  readonly failureWindow?: Duration.DurationInput
}

export interface AccountsShape {
  /** Logs in for the client at `address`, under the login policy (see `LoginGuard`). */
  readonly login: (input: LoginInput, address: string) => Effect.Effect<AuthResult, LogicError | LoginRefused>
  readonly register: (input: RegisterInput) => Effect.Effect<AuthResult, LogicError>
  /** Revokes a valid token (see `Authenticator.revoke`); answers whose it was. */
  readonly logout: (token: string | undefined) => Effect.Effect<Principal, AuthError>
}

const invalid = (message: string) => Effect.fail(logicError("invalid_argument", message))

/** Login, registration and logout: the AuthService of the API, whatever transport serves it. */
export class Accounts extends Context.Tag("resonance/Accounts")<Accounts, AccountsShape>() {
  static readonly layer = (options: AccountsOptions = {}): Layer.Layer<Accounts, never, Logic | Authenticator> =>
    Layer.effect(
      Accounts,
      Effect.gen(function*() {
        const logic = yield* Logic
        const authenticator = yield* Authenticator
        const guard = makeLoginGuard({
          failuresPerUserAndAddress: options.failuresPerUserAndAddress ?? 0,
          failureWindowSeconds: Duration.toSeconds(options.failureWindow ?? "15 minutes")
        })

        const login = (input: LoginInput, address: string) => {
          const username = input.username.trim().toLowerCase()
          if (username === "") return invalid("username must not be empty")
          if (input.password === "") return invalid("password must not be empty")
          // Guessing one user's password from many addresses runs into this, not a per-address limit.
          return guard.guard(username, address, logic.login(input), (error) => error.code === "unauthenticated")
        }

        const register = (input: RegisterInput) => {
          if (input.username.trim() === "") return invalid("username must not be empty")
          if (input.password.length < 6) return invalid("password must be at least 6 characters")
          return logic.register(input)
        }

        const logout = (token: string | undefined) =>
          Effect.tap(authenticator.authenticate(token), () => authenticator.revoke(token ?? ""))

        return { login, register, logout }
      })
    )
}
