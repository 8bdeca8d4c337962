import Core

/// Charts drawn as inline SVG on the server: no script, no external request, and every bar
/// carries its exact figure in a `<title>` (the browser shows it on hover).
enum SVGChart {
    /// Money per day, stacked by series (models), one bar per day of `days`.
    static func stackedDays(days: [UTCDay], series: [String], values: [String: [UTCDay: Money]], label: String) -> String {
        let width = 760, height = 240, left = 72, bottom = 28, top = 10
        let plotWidth = width - left - 8, plotHeight = height - bottom - top
        let totals = days.map { day in series.reduce(Int64(0)) { $0 + (values[$1]?[day]?.nanos ?? 0) } }
        // Four gridlines a round step apart (1, 2 or 5 × 10^n nano-dollars), labelled exactly.
        let tick = niceCeiling(((totals.max() ?? 0) + 3) / 4)
        let axisTop = tick * 4
        let slot = Double(plotWidth) / Double(max(days.count, 1))
        let barWidth = max(2, slot * 0.7)
        var svg = """
            <svg class="chart" viewBox="0 0 \(width) \(height)" role="img" aria-label="\(HTML.escape(label))" \
            xmlns="http://www.w3.org/2000/svg">
            """
        for line in 0...4 {
            let value = tick * Int64(line)
            let y = Double(top + plotHeight) - Double(plotHeight) * Double(line) / 4
            svg += "<line class=\"grid\" x1=\"\(left)\" x2=\"\(width - 8)\" y1=\"\(fmt(y))\" y2=\"\(fmt(y))\"/>"
            svg += "<text class=\"axis\" x=\"\(left - 6)\" y=\"\(fmt(y + 4))\" text-anchor=\"end\">$\(Money(nanos: value).decimalString)</text>"
        }
        for (index, day) in days.enumerated() {
            let x = Double(left) + slot * Double(index) + (slot - barWidth) / 2
            var y = Double(top + plotHeight)
            for (s, name) in series.enumerated() {
                guard let amount = values[name]?[day], amount.nanos > 0, axisTop > 0 else { continue }
                let h = Double(plotHeight) * Double(amount.nanos) / Double(axisTop)
                y -= h
                svg += "<rect class=\"s\(s % 8)\" x=\"\(fmt(x))\" y=\"\(fmt(y))\" width=\"\(fmt(barWidth))\" height=\"\(fmt(max(h, 0.5)))\" "
                    + "data-day=\"\(day)\" data-series=\"\(HTML.escape(name))\" data-nanos=\"\(amount.nanos)\">"
                    + "<title>\(day) \(HTML.escape(name)): $\(amount.exactDecimal)</title></rect>"
            }
            if index == 0 || (index + 1) % 5 == 0 || index == days.count - 1 {
                svg += "<text class=\"axis\" x=\"\(fmt(x + barWidth / 2))\" y=\"\(height - 8)\" text-anchor=\"middle\">\(day.day)</text>"
            }
        }
        svg += "</svg>"
        let legend = series.enumerated().map { s, name in
            "<li><svg width=\"10\" height=\"10\" aria-hidden=\"true\"><rect class=\"s\(s % 8)\" width=\"10\" height=\"10\"/></svg> \(HTML.escape(name))</li>"
        }.joined()
        return "<figure class=\"chart\">\(svg)<ul class=\"legend\">\(legend)</ul></figure>"
    }

    /// A budget bar: spent, then held, over the budget's width (empty for an unlimited budget).
    static func budgetBar(_ month: CustomerMonth) -> String {
        guard let budget = month.status.budget else { return "<span class=\"muted\">no budget</span>" }
        let width = 120.0
        let spent = budget.nanos > 0 ? min(width, width * Double(month.status.spent.nanos) / Double(budget.nanos)) : width
        let held = budget.nanos > 0 ? min(width - spent, width * Double(month.status.held.nanos) / Double(budget.nanos)) : 0
        return """
            <svg class="bar" width="120" height="10" role="img" aria-label="\(month.usedPPM / 10_000)% of the budget used">\
            <rect class="track" width="120" height="10"/><rect class="spent" width="\(fmt(spent))" height="10"/>\
            <rect class="held" x="\(fmt(spent))" width="\(fmt(held))" height="10"/></svg>
            """
    }

    /// The smallest 1, 2 or 5 × 10^n at or above `value`, so the axis reads in round numbers.
    static func niceCeiling(_ value: Int64) -> Int64 {
        guard value > 0 else { return 0 }
        var magnitude: Int64 = 1
        while magnitude <= value / 10 { magnitude *= 10 }
        for step in [1, 2, 5, 10] as [Int64] where magnitude * step >= value { return magnitude * step }
        return magnitude * 10
    }

    private static func fmt(_ value: Double) -> String {
        let rounded = (value * 10).rounded() / 10
        return rounded == rounded.rounded() ? String(Int(rounded)) : String(rounded)
    }
}
