/// Reading and writing the pieces of JSON text: string escapes, folded keys, quoting.
enum JSONText {
    static func hexValue(_ b: UInt8) -> UInt32? {
        switch b {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): UInt32(b - UInt8(ascii: "0"))
        case UInt8(ascii: "a")...UInt8(ascii: "f"): UInt32(b - UInt8(ascii: "a") + 10)
        case UInt8(ascii: "A")...UInt8(ascii: "F"): UInt32(b - UInt8(ascii: "A") + 10)
        default: nil
        }
    }

    /// The decoded value of a (validated) string entry.
    static func decodeString(_ entry: Entry, _ p: UnsafeBufferPointer<UInt8>) -> String {
        let start = entry.offset + 1, end = start + entry.payload
        let raw = UnsafeBufferPointer(rebasing: p[start..<end])
        guard entry.kind == .escapedString else { return String(decoding: raw, as: UTF8.self) }
        return String(decoding: unescape(raw), as: UTF8.self)
    }

    /// The UTF-8 bytes a validated string body stands for. A lone surrogate escape becomes
    /// U+FFFD, as Go's `encoding/json` reads it.
    static func unescape(_ raw: UnsafeBufferPointer<UInt8>) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(raw.count)
        var i = 0
        func hex4(_ at: Int) -> UInt32 {
            (0..<4).reduce(0) { $0 << 4 | (hexValue(raw[at + $1]) ?? 0) }
        }
        while i < raw.count {
            let b = raw[i]
            guard b == UInt8(ascii: "\\") else {
                out.append(b)
                i += 1
                continue
            }
            let e = raw[i + 1]
            i += 2
            switch e {
            case UInt8(ascii: "b"): out.append(0x08)
            case UInt8(ascii: "f"): out.append(0x0C)
            case UInt8(ascii: "n"): out.append(0x0A)
            case UInt8(ascii: "r"): out.append(0x0D)
            case UInt8(ascii: "t"): out.append(0x09)
            case UInt8(ascii: "u"):
                var scalar = hex4(i)
                i += 4
                if (0xD800...0xDBFF).contains(scalar) {
                    if i + 6 <= raw.count, raw[i] == UInt8(ascii: "\\"), raw[i + 1] == UInt8(ascii: "u"),
                       case let low = hex4(i + 2), (0xDC00...0xDFFF).contains(low) {
                        scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
                        i += 6
                    } else {
                        scalar = 0xFFFD
                    }
                } else if (0xDC00...0xDFFF).contains(scalar) {
                    scalar = 0xFFFD
                }
                appendUTF8(Unicode.Scalar(scalar) ?? "\u{FFFD}", to: &out)
            default: out.append(e) // \" \\ \/
            }
        }
        return out
    }

    static func appendUTF8(_ scalar: Unicode.Scalar, to out: inout [UInt8]) {
        UTF8.encode(scalar) { out.append($0) }
    }

    // MARK: Folded keys

    /// A key as Go's `encoding/json` compares it to a field name (Unicode case folding): ASCII
    /// keys lower-cased byte by byte, others through upper- then lower-casing, which maps the
    /// folding variants (the Kelvin sign, the long s, ...) onto one spelling.
    static func foldedKey(_ entry: Entry, _ p: UnsafeBufferPointer<UInt8>) -> [UInt8] {
        let start = entry.offset + 1, end = start + entry.payload
        if entry.kind == .string && p[start..<end].allSatisfy({ $0 < 0x80 }) {
            return p[start..<end].map(lowerASCII)
        }
        return Array(decodeString(entry, p).uppercased().lowercased().utf8)
    }

    /// A hash of the folded key with Swift's per-process random seed (SipHash), so nobody can
    /// prepare keys that all collide and turn the duplicate check quadratic. Plain ASCII keys
    /// are hashed without allocating.
    static func foldedKeyHash(_ entry: Entry, _ p: UnsafeBufferPointer<UInt8>) -> Int {
        let start = entry.offset + 1, end = start + entry.payload
        var hasher = Hasher()
        if entry.kind == .string && p[start..<end].allSatisfy({ $0 < 0x80 }) {
            for b in p[start..<end] { hasher.combine(lowerASCII(b)) }
        } else {
            for b in foldedKey(entry, p) { hasher.combine(b) }
        }
        return hasher.finalize()
    }

    @inline(__always) static func lowerASCII(_ b: UInt8) -> UInt8 {
        b >= UInt8(ascii: "A") && b <= UInt8(ascii: "Z") ? b | 0x20 : b
    }

    // MARK: Writing

    /// Appends `text` as a JSON string literal (RFC 8259 escapes; `/` and non-ASCII stay as they are).
    static func appendQuoted(_ text: String, to out: inout [UInt8]) {
        out.append(UInt8(ascii: "\""))
        var text = text
        text.withUTF8 { utf8 in
            var runStart = 0
            for (i, b) in utf8.enumerated() where b < 0x20 || b == UInt8(ascii: "\"") || b == UInt8(ascii: "\\") {
                out.append(contentsOf: UnsafeBufferPointer(rebasing: utf8[runStart..<i]))
                runStart = i + 1
                out.append(UInt8(ascii: "\\"))
                switch b {
                case UInt8(ascii: "\""), UInt8(ascii: "\\"): out.append(b)
                case 0x0A: out.append(UInt8(ascii: "n"))
                case 0x0D: out.append(UInt8(ascii: "r"))
                case 0x09: out.append(UInt8(ascii: "t"))
                case 0x08: out.append(UInt8(ascii: "b"))
                case 0x0C: out.append(UInt8(ascii: "f"))
                default:
                    let digits: [UInt8] = Array("0123456789abcdef".utf8)
                    out.append(contentsOf: [UInt8(ascii: "u"), UInt8(ascii: "0"), UInt8(ascii: "0"),
                                            digits[Int(b >> 4)], digits[Int(b & 0xF)]])
                }
            }
            out.append(contentsOf: UnsafeBufferPointer(rebasing: utf8[runStart...]))
        }
        out.append(UInt8(ascii: "\""))
    }
}
