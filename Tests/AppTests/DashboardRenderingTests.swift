@testable import App
import Core
import Testing

/// The dashboard's hand-written HTML: amounts, escaping and the chart's axis.
@Suite("Dashboard rendering")
struct DashboardRenderingTests {
    @Test func amountsAreRoundedForReadingWithTheExactValueKept() {
        #expect(HTML.rounded(.zero) == "$0")
        #expect(HTML.rounded(Money(nanos: 1_234_567_891_234)) == "$1,234.57")
        #expect(HTML.rounded(Money(nanos: 10_000_000)) == "$0.01")
        #expect(HTML.rounded(Money(nanos: 9_999_999)) == "$0.0099")
        #expect(HTML.rounded(Money(nanos: 3_075_000)) == "$0.003")
        #expect(HTML.rounded(Money(nanos: 420)) == "$0.00000042")
        #expect(HTML.rounded(Money(nanos: 1)) == "$0.000000001")
        #expect(HTML.rounded(Money(nanos: -15_000_000)) == "-$0.02")
        #expect(HTML.money(Money(nanos: 1_500_000_001)).contains("title=\"$1.500000001\" data-nanos=\"1500000001\">$1.50<"))
    }

    @Test func textIsEscapedEverywhereItIsShown() {
        #expect(HTML.escape("<script>alert('x')</script> & \"q\"") == "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;q&quot;")
        let day = UTCDay(year: 2026, month: 11, day: 3)!
        let chart = SVGChart.stackedDays(days: [day], series: ["<img src=x>"], values: ["<img src=x>": [day: Money(nanos: 5)]],
                                         label: "a\"b")
        #expect(!chart.contains("<img") && chart.contains("&lt;img src=x&gt;") && chart.contains("aria-label=\"a&quot;b\""))
    }

    @Test func theAxisStepsRoundlyAndHoldsTheTallestBar() {
        #expect(SVGChart.niceCeiling(0) == 0)
        #expect(SVGChart.niceCeiling(1) == 1)
        #expect(SVGChart.niceCeiling(3_275_000) == 5_000_000)
        #expect(SVGChart.niceCeiling(10_000_000) == 10_000_000)
        #expect(SVGChart.niceCeiling(10_000_001) == 20_000_000)
        #expect(SVGChart.niceCeiling(Int64.max / 100) > Int64.max / 100)
        let day = UTCDay(year: 2026, month: 11, day: 3)!
        let chart = SVGChart.stackedDays(days: [day], series: ["a", "b"], values: ["a": [day: Money(nanos: 7)], "b": [day: Money(nanos: 6)]],
                                         label: "x")
        #expect(chart.contains("data-nanos=\"7\"") && chart.contains("data-nanos=\"6\"") && chart.contains(">$0.00000002<"))
    }

    /// However many model names a customer makes up, a chart has eight series and a table fifty rows.
    @Test func madeUpModelNamesCannotGrowAPage() {
        let day = UTCDay(year: 2026, month: 11, day: 3)!
        let rows = (0..<500).map { DailyModelUsage(day: day, model: "junk-\($0)", requests: 1, promptTokens: 0, completionTokens: 0,
                                                   cost: Money(nanos: Int64(1_000 - $0))) }
        let ranked = UsageReport(customerId: 0, range: DayRange(start: day, end: day), daily: rows).byCost
        let (models, values) = AdminPages.series(rows, ranked: ranked.map(\.model))
        #expect(models.count == 8 && models.first == "junk-0" && models.last == "other (493 models)")
        #expect(values["other (493 models)"]?[day] == Money(nanos: (7..<500).reduce(0) { $0 + Int64(1_000 - $1) }))
        let table = AdminPages.modelTable(ranked)
        #expect(table.components(separatedBy: "<tr data-model=").count - 1 == 50 && table.contains("and 450 more models"))
    }
}
