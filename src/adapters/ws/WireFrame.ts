/**
 * A server-to-client WebSocket frame as it goes on the wire (RFC 6455 §5.2: FIN, binary opcode,
 * unmasked), header and payload in one buffer: a fan-out builds it once and writes the same bytes
 * to every socket in one write each, where `ws.send` would frame the payload again per socket and
 * write the header and the payload separately.
 */
export const wireFrame = (payload: Uint8Array): Buffer => {
  const length = payload.byteLength
  const headerLength = length < 126 ? 2 : length < 65_536 ? 4 : 10
  const frame = Buffer.allocUnsafe(headerLength + length)
  frame[0] = 0x82
  if (length < 126) {
    frame[1] = length
  } else if (length < 65_536) {
    frame[1] = 126
    frame.writeUInt16BE(length, 2)
  } else {
    frame[1] = 127
    frame.writeUInt32BE(Math.floor(length / 2 ** 32), 2)
    frame.writeUInt32BE(length >>> 0, 6)
  }
  frame.set(payload, headerLength)
  return frame
}

/**
 * Remembers the wire form of the last payload it framed: the recipients of one push are written
 * the same payload object in a row, so it is framed once however many sockets it goes to.
 */
export class WireFrameCache {
  private payload: Uint8Array | undefined = undefined
  private frame: Buffer | undefined = undefined

  of(payload: Uint8Array): Buffer {
    if (payload !== this.payload) {
      this.frame = wireFrame(payload)
      this.payload = payload
    }
    return this.frame!
  }
}
