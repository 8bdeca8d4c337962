/// Builds a `JSONDocument`'s tape in one pass, without recursion (an explicit stack bounded by
/// `maxDepth`), validating RFC 8259 syntax and UTF-8 as it goes.
struct JSONParser {
    let limits: JSONLimits
    private(set) var tape: [Entry] = []
    /// Open containers: the index of each one's start entry and its element count so far.
    private var stack: [(start: Int, count: Int)] = []
    /// Reused for the duplicate-key check: one (folded-key hash, key entry index) per member.
    private var keys: [(hash: Int, index: Int)] = []

    init(limits: JSONLimits, byteCount: Int) {
        self.limits = limits
        tape.reserveCapacity(min(max(16, byteCount / 8), 1 << 20))
    }

    mutating func parse(_ p: UnsafeBufferPointer<UInt8>) throws(JSONError) {
        guard p.count < Int(UInt32.max) else { throw JSONError(.tooLarge, at: 0) }
        var i = Self.skipWhitespace(p, 0)
        guard i < p.count else { throw JSONError(.empty, at: 0) }
        var expectingValue = true
        while true {
            if expectingValue {
                i = Self.skipWhitespace(p, i)
                guard i < p.count else { throw JSONError(.syntax, at: i) }
                switch p[i] {
                case UInt8(ascii: "{"):
                    try open(.objectStart, at: i)
                    i = Self.skipWhitespace(p, i + 1)
                    if i < p.count && p[i] == UInt8(ascii: "}") {
                        try close(.objectEnd, at: i, p)
                        i += 1
                        expectingValue = false
                    } else {
                        i = try key(p, i)
                    }
                    continue
                case UInt8(ascii: "["):
                    try open(.arrayStart, at: i)
                    i = Self.skipWhitespace(p, i + 1)
                    if i < p.count && p[i] == UInt8(ascii: "]") {
                        try close(.arrayEnd, at: i, p)
                        i += 1
                        expectingValue = false
                    }
                    continue
                case UInt8(ascii: "\""): i = try string(p, i)
                case UInt8(ascii: "t"): i = try literal(p, i, "true", .true)
                case UInt8(ascii: "f"): i = try literal(p, i, "false", .false)
                case UInt8(ascii: "n"): i = try literal(p, i, "null", .null)
                case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): i = try number(p, i)
                default: throw JSONError(.syntax, at: i)
                }
                countValue()
                expectingValue = false
            } else {
                i = Self.skipWhitespace(p, i)
                guard let top = stack.last else {
                    guard i == p.count else { throw JSONError(.syntax, at: i) }
                    return
                }
                guard i < p.count else { throw JSONError(.syntax, at: i) }
                let isObject = tape[top.start].kind == .objectStart
                switch p[i] {
                case UInt8(ascii: ","):
                    if isObject {
                        i = try key(p, Self.skipWhitespace(p, i + 1))
                    } else {
                        i += 1
                    }
                    expectingValue = true
                case UInt8(ascii: "}") where isObject:
                    try close(.objectEnd, at: i, p)
                    i += 1
                case UInt8(ascii: "]") where !isObject:
                    try close(.arrayEnd, at: i, p)
                    i += 1
                default:
                    throw JSONError(.syntax, at: i)
                }
            }
        }
    }

    // MARK: Containers

    private mutating func append(_ entry: Entry, at offset: Int) throws(JSONError) {
        guard tape.count < Entry.maxPayload else { throw JSONError(.tooLarge, at: offset) }
        tape.append(entry)
    }

    private mutating func open(_ kind: Entry.Kind, at i: Int) throws(JSONError) {
        guard stack.count < limits.maxDepth else { throw JSONError(.tooDeep(limits.maxDepth), at: i) }
        stack.append((tape.count, 0))
        try append(Entry(kind, payload: 0, offset: i), at: i)
    }

    private mutating func close(_ kind: Entry.Kind, at i: Int, _ p: UnsafeBufferPointer<UInt8>) throws(JSONError) {
        let (start, count) = stack.removeLast()
        let end = tape.count
        tape[start] = Entry(tape[start].kind, payload: end, offset: tape[start].offset)
        try append(Entry(kind, payload: min(count, Entry.maxPayload), offset: i), at: i)
        if kind == .objectEnd && count > 1 && limits.rejectsCaseInsensitiveDuplicateKeys {
            try checkDuplicateKeys(start: start, end: end, p)
        }
        countValue()
    }

    private mutating func countValue() {
        if !stack.isEmpty { stack[stack.count - 1].count += 1 }
    }

    /// A member's key and the colon after it; returns the index where its value starts.
    private mutating func key(_ p: UnsafeBufferPointer<UInt8>, _ start: Int) throws(JSONError) -> Int {
        guard start < p.count, p[start] == UInt8(ascii: "\"") else { throw JSONError(.syntax, at: start) }
        let i = Self.skipWhitespace(p, try string(p, start))
        guard i < p.count, p[i] == UInt8(ascii: ":") else { throw JSONError(.syntax, at: i) }
        return i + 1
    }

    // MARK: Scalars

    private mutating func literal(_ p: UnsafeBufferPointer<UInt8>, _ i: Int, _ word: StaticString,
                                  _ kind: Entry.Kind) throws(JSONError) -> Int {
        let n = word.utf8CodeUnitCount
        guard i + n <= p.count else { throw JSONError(.syntax, at: i) }
        for k in 0..<n where p[i + k] != word.utf8Start[k] { throw JSONError(.syntax, at: i + k) }
        try append(Entry(kind, payload: 0, offset: i), at: i)
        return i + n
    }

    /// `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`
    private mutating func number(_ p: UnsafeBufferPointer<UInt8>, _ start: Int) throws(JSONError) -> Int {
        var i = start
        func digits(_ i: inout Int) -> Int {
            let from = i
            while i < p.count, p[i] >= UInt8(ascii: "0"), p[i] <= UInt8(ascii: "9") { i += 1 }
            return i - from
        }
        if p[i] == UInt8(ascii: "-") { i += 1 }
        guard i < p.count else { throw JSONError(.syntax, at: i) }
        if p[i] == UInt8(ascii: "0") {
            i += 1
        } else if digits(&i) == 0 {
            throw JSONError(.syntax, at: i)
        }
        if i < p.count, p[i] == UInt8(ascii: ".") {
            i += 1
            guard digits(&i) > 0 else { throw JSONError(.syntax, at: i) }
        }
        if i < p.count, p[i] == UInt8(ascii: "e") || p[i] == UInt8(ascii: "E") {
            i += 1
            if i < p.count, p[i] == UInt8(ascii: "+") || p[i] == UInt8(ascii: "-") { i += 1 }
            guard digits(&i) > 0 else { throw JSONError(.syntax, at: i) }
        }
        guard i - start <= Entry.maxPayload else { throw JSONError(.tooLarge, at: start) }
        try append(Entry(.number, payload: i - start, offset: start), at: start)
        return i
    }

    /// A string starting at its opening quote; returns the index after its closing quote.
    private mutating func string(_ p: UnsafeBufferPointer<UInt8>, _ start: Int) throws(JSONError) -> Int {
        var i = start + 1
        var escaped = false
        while true {
            // The common case: plain printable ASCII.
            while i < p.count, p[i] >= 0x20, p[i] < 0x80, p[i] != UInt8(ascii: "\""), p[i] != UInt8(ascii: "\\") { i += 1 }
            guard i < p.count else { throw JSONError(.syntax, at: i) }
            let b = p[i]
            if b == UInt8(ascii: "\"") { break }
            if b == UInt8(ascii: "\\") {
                escaped = true
                guard i + 1 < p.count else { throw JSONError(.syntax, at: i) }
                switch p[i + 1] {
                case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"), UInt8(ascii: "b"), UInt8(ascii: "f"),
                     UInt8(ascii: "n"), UInt8(ascii: "r"), UInt8(ascii: "t"):
                    i += 2
                case UInt8(ascii: "u"):
                    guard i + 6 <= p.count, (2..<6).allSatisfy({ JSONText.hexValue(p[i + $0]) != nil }) else {
                        throw JSONError(.syntax, at: i)
                    }
                    i += 6
                default:
                    throw JSONError(.syntax, at: i)
                }
            } else if b < 0x20 {
                throw JSONError(.syntax, at: i)
            } else {
                i += try Self.utf8SequenceLength(p, i)
            }
        }
        let length = i - start - 1
        guard length <= Entry.maxPayload else { throw JSONError(.tooLarge, at: start) }
        try append(Entry(escaped ? .escapedString : .string, payload: length, offset: start), at: start)
        return i + 1
    }

    /// The length of the well-formed UTF-8 sequence at `i` (Unicode Table 3-7), or an error.
    static func utf8SequenceLength(_ p: UnsafeBufferPointer<UInt8>, _ i: Int) throws(JSONError) -> Int {
        let b = p[i]
        let length: Int, second: ClosedRange<UInt8>
        switch b {
        case 0xC2...0xDF: (length, second) = (2, 0x80...0xBF)
        case 0xE0: (length, second) = (3, 0xA0...0xBF)
        case 0xE1...0xEC, 0xEE...0xEF: (length, second) = (3, 0x80...0xBF)
        case 0xED: (length, second) = (3, 0x80...0x9F)
        case 0xF0: (length, second) = (4, 0x90...0xBF)
        case 0xF1...0xF3: (length, second) = (4, 0x80...0xBF)
        case 0xF4: (length, second) = (4, 0x80...0x8F)
        default: throw JSONError(.invalidUTF8, at: i)
        }
        guard i + length <= p.count, second.contains(p[i + 1]) else { throw JSONError(.invalidUTF8, at: i) }
        for k in 2..<length where !(0x80...0xBF).contains(p[i + k]) { throw JSONError(.invalidUTF8, at: i) }
        return length
    }

    static func skipWhitespace(_ p: UnsafeBufferPointer<UInt8>, _ start: Int) -> Int {
        var i = start
        while i < p.count {
            switch p[i] {
            case 0x20, 0x0A, 0x0D, 0x09: i += 1
            default: return i
            }
        }
        return i
    }

    // MARK: Duplicate keys

    /// Refuses an object whose keys collide ignoring case (Go's `encoding/json` would let the
    /// later one win, silently). Hashes the folded keys (seeded); only equal hashes are compared
    /// in full.
    private mutating func checkDuplicateKeys(start: Int, end: Int, _ p: UnsafeBufferPointer<UInt8>) throws(JSONError) {
        keys.removeAll(keepingCapacity: true)
        var j = start + 1
        while j < end {
            keys.append((JSONText.foldedKeyHash(tape[j], p), j))
            let value = tape[j + 1]
            j = value.kind == .arrayStart || value.kind == .objectStart ? value.payload + 1 : j + 2
        }
        // Few keys: compare every pair. Many: sort by hash, so equal hashes are neighbours.
        let sorted = keys.count > 8
        if sorted { keys.sort { $0.hash < $1.hash } }
        for a in 0..<keys.count {
            var b = a + 1
            while b < keys.count {
                if keys[a].hash == keys[b].hash,
                   JSONText.foldedKey(tape[keys[a].index], p) == JSONText.foldedKey(tape[keys[b].index], p) {
                    let later = max(keys[a].index, keys[b].index)
                    throw JSONError(.duplicateKey(JSONText.decodeString(tape[later], p)), at: tape[later].offset)
                }
                if sorted && keys[a].hash != keys[b].hash { break }
                b += 1
            }
        }
    }
}
