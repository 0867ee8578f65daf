import { OtelTraceFlags } from "@effect/opentelemetry/Tracer"
import { Context, Effect, Option, Tracer } from "effect"

/** The W3C `traceparent` value for a span: `00-<traceId>-<spanId>-<flags>`. */
export const formatTraceparent = (span: Tracer.AnySpan): string =>
  `00-${span.traceId}-${span.spanId}-${span.sampled ? "01" : "00"}`

// Same rule as Effect's own propagation: a span marked DisablePropagation defers to its nearest ancestor.
const propagated = (span: Tracer.AnySpan): Option.Option<Tracer.AnySpan> =>
  Context.get(span.context, Tracer.DisablePropagation)
    ? span._tag === "Span" ? Option.flatMap(span.parent, propagated) : Option.none()
    : Option.some(span)

/**
 * Metadata to attach to an outgoing call so the callee continues the current trace: `traceparent`,
 * and `trace-id` for peers that log the bare id. Empty outside a span.
 */
export const currentTraceHeaders: Effect.Effect<Record<string, string>> = Effect.map(
  Effect.serviceOption(Tracer.ParentSpan),
  (current): Record<string, string> => {
    const span = Option.flatMap(current, propagated)
    return Option.isSome(span) ? { traceparent: formatTraceparent(span.value), "trace-id": span.value.traceId } : {}
  }
)

const hexDigit = (code: number): number =>
  code >= 48 && code <= 57 ? code - 48 : code >= 97 && code <= 102 ? code - 87 : -1

/** The value of lower-case hex digits `start..end` (at most 8 of them), or -1. */
const hexValue = (text: string, start: number, end: number): number => {
  let value = 0
  for (let i = start; i < end; i++) {
    const digit = hexDigit(text.charCodeAt(i))
    if (digit < 0) return -1
    value = value * 16 + digit
  }
  return value
}

/** Lower-case hex digits `start..end`, not all zeros (an invalid id in W3C trace context). */
const isHexId = (text: string, start: number, end: number): boolean => {
  let nonZero = false
  for (let i = start; i < end; i++) {
    const code = text.charCodeAt(i)
    if (hexDigit(code) < 0) return false
    if (code !== 48) nonZero = true
  }
  return nonZero
}

/**
 * Reads an incoming W3C `traceparent` (`vv-<32 hex>-<16 hex>-ff`) character by character; `None`
 * when absent or malformed, so the callee starts a new trace. Versions above 00 may append fields.
 */
export const parentSpanFromTraceparent = (header: string | undefined): Option.Option<Tracer.ExternalSpan> => {
  if (header === undefined) return Option.none()
  const text = header.length === 55 ? header : header.trim().toLowerCase()
  if (text.length < 55 || text[2] !== "-" || text[35] !== "-" || text[52] !== "-") return Option.none()
  const version = hexValue(text, 0, 2)
  if (version < 0 || version === 0xff) return Option.none()
  if (version === 0 ? text.length !== 55 : text.length > 55 && text[55] !== "-") return Option.none()
  const traceFlags = hexValue(text, 53, 55)
  if (traceFlags < 0 || !isHexId(text, 3, 35) || !isHexId(text, 36, 52)) return Option.none()
  return Option.some(Tracer.externalSpan({
    traceId: text.slice(3, 35),
    spanId: text.slice(36, 52),
    sampled: (traceFlags & 1) === 1,
    // Without the flags in context the OTel bridge would treat every remote parent as sampled.
    context: Context.make(OtelTraceFlags, traceFlags)
  }))
}
