import { describe, expect, it } from "@effect/vitest"
import { AuthError, failureCodeOfAuth, isSendRefusal, logicError, NOT_A_MEMBER, sendRefusalOf } from "../../src/domain/Errors.js"
import { isRequestedSessionType, missingMembersProblem } from "../../src/domain/Session.js"

describe("SendMessage refusals on the wire", () => {
  it("a refusal survives the trip through SendMessageResponse.error unchanged", () => {
    for (const error of [logicError("invalid_argument", "content is required"), logicError("permission_denied", NOT_A_MEMBER)]) {
      expect(isSendRefusal(error)).toBe(true)
      expect(sendRefusalOf(error.message)).toMatchObject({ code: error.code, message: error.message })
    }
  })

  it("outages and other permission failures travel as a status instead", () => {
    expect(isSendRefusal(logicError("unavailable", "down"))).toBe(false)
    expect(isSendRefusal(logicError("permission_denied", "something else"))).toBe(false)
  })
})

describe("failureCodeOfAuth", () => {
  it("is unavailable for an outage and unauthenticated for every refusal", () => {
    expect(failureCodeOfAuth(new AuthError({ reason: "Unavailable", message: "" }))).toBe("unavailable")
    for (const reason of ["Missing", "Invalid", "Expired", "Revoked"] as const) {
      expect(failureCodeOfAuth(new AuthError({ reason, message: "" }))).toBe("unauthenticated")
    }
  })
})

describe("a client's session request", () => {
  it("may leave the type out or name a known one", () => {
    expect([0, 1, 2, 3, 4, -1].map(isRequestedSessionType)).toEqual([true, true, true, true, false, false])
  })

  it("names the other user of a direct session, someone for a group, no one for a system session", () => {
    expect(missingMembersProblem(0, [])).toBe("members must name the other user")
    expect(missingMembersProblem(1, [])).toBe("members must name the other user")
    expect(missingMembersProblem(2, [])).toBe("members must not be empty for a group session")
    expect(missingMembersProblem(3, [])).toBeUndefined()
    expect(missingMembersProblem(2, ["bob"])).toBeUndefined()
  })
})
