import Core

/// Small, escaping building blocks for the dashboard's server-rendered pages.
enum HTML {
    /// Text safe inside an element or a quoted attribute.
    static func escape(_ text: String) -> String {
        var out = ""
        out.reserveCapacity(text.utf8.count)
        for scalar in text.unicodeScalars {
            switch scalar {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\"": out += "&quot;"
            case "'": out += "&#39;"
            default: out.unicodeScalars.append(scalar)
            }
        }
        return out
    }

    /// A money amount rounded for reading, the exact value (to the nano-dollar) on hover and in
    /// `data-nanos` for scripts and tests.
    static func money(_ amount: Money) -> String {
        "<span class=\"money\" title=\"$\(amount.exactDecimal)\" data-nanos=\"\(amount.nanos)\">\(rounded(amount))</span>"
    }

    /// `$1,234.57` from a cent up; below that the first two significant digits (`$0.00042`);
    /// `$0` for nothing.
    static func rounded(_ amount: Money) -> String {
        let nanos = amount.nanos
        if nanos == 0 { return "$0" }
        let sign = nanos < 0 ? "-" : ""
        let magnitude = nanos.magnitude
        if magnitude >= 10_000_000 {
            let cents = (magnitude + 5_000_000) / 10_000_000
            return "\(sign)$\(grouped(cents / 100)).\(cents % 100 < 10 ? "0" : "")\(cents % 100)"
        }
        // Below a cent: nine decimals, cut after the second significant digit.
        var digits = String(magnitude)
        digits = String(repeating: "0", count: 9 - digits.count) + digits
        let firstSignificant = digits.firstIndex { $0 != "0" }!
        let end = digits.index(firstSignificant, offsetBy: 2, limitedBy: digits.endIndex) ?? digits.endIndex
        var shown = String(digits[..<end])
        while shown.hasSuffix("0") { shown.removeLast() }
        return "\(sign)$0.\(shown)"
    }

    /// `1,234,567`.
    static func grouped<T: BinaryInteger>(_ value: T) -> String {
        let text = String(value.magnitude)
        var out = ""
        for (i, c) in text.enumerated() {
            if i > 0, (text.count - i) % 3 == 0 { out += "," }
            out.append(c)
        }
        return (value < 0 ? "-" : "") + out
    }

    /// `2026-11-30 14:05:09 UTC`.
    static func time(_ micros: Int64) -> String {
        let iso = Timestamp.iso8601(micros: micros)
        return String(iso.prefix(10)) + " " + String(iso.dropFirst(11).prefix(8)) + " UTC"
    }

    /// A whole page: the operator's navigation (unless `nav` is false), a title and the body.
    static func page(title: String, active: String? = nil, nav: Bool = true, body: String) -> String {
        let links = [("/admin", "Overview"), ("/admin/customers", "Customers"), ("/admin/models", "Models")]
        let menu = nav ? """
            <nav><span class="brand">lmsvr</span>\(links.map { link in
                "<a href=\"\(link.0)\"\(link.0 == active ? " class=\"active\"" : "")>\(link.1)</a>"
            }.joined())<form method="post" action="/admin/logout"><button type="submit">Log out</button></form></nav>
            """ : "<nav><span class=\"brand\">lmsvr</span></nav>"
        return """
            <!doctype html>
            <html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
            <title>\(escape(title)) · lmsvr</title><link rel="stylesheet" href="/admin/assets/dashboard.css">
            <link rel="icon" href="/admin/assets/favicon.svg" type="image/svg+xml"></head>
            <body>\(menu)<main><h1>\(escape(title))</h1>
            \(body)
            </main></body></html>
            """
    }
}
