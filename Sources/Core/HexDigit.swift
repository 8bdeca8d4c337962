/// The ASCII lowercase hex digit of a value below 16 (its low four bits): for code that writes hex
/// straight into a buffer (key hashes, request ids, JSON escapes) without a table or `Character`s.
@inlinable @inline(__always)
public func hexDigit<N: BinaryInteger>(_ nibble: N) -> UInt8 {
    let n = UInt8(truncatingIfNeeded: nibble) & 0x0f
    return n < 10 ? UInt8(ascii: "0") + n : UInt8(ascii: "a") - 10 + n
}
