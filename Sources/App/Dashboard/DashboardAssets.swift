/// The dashboard's style sheet and the key holder's page and script, embedded in the binary so
/// the pages work wherever `lmsvr` runs and load nothing from anywhere else.
enum DashboardAssets {
    static let favicon = """
        <svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 16 16"><rect width="16" height="16" rx="3" fill="#2f5bea"/>\
        <rect x="3" y="8" width="2" height="5" fill="#fff"/><rect x="7" y="5" width="2" height="8" fill="#fff"/>\
        <rect x="11" y="3" width="2" height="10" fill="#fff"/></svg>
        """
    static let css = """
        :root { --fg: #1d2330; --muted: #687083; --line: #e3e6ee; --bg: #f7f8fb; --card: #fff; --accent: #2f5bea;
                --ok: #1a7f4b; --bad: #b42318; }
        * { box-sizing: border-box; }
        [hidden] { display: none !important; }
        body { margin: 0; font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--fg); background: var(--bg); }
        nav { display: flex; gap: 18px; align-items: center; padding: 10px 24px; background: var(--card); border-bottom: 1px solid var(--line); }
        nav .brand { font-weight: 700; margin-right: 12px; }
        nav a { color: var(--muted); text-decoration: none; }
        nav a.active, nav a:hover { color: var(--fg); }
        nav form { margin-left: auto; }
        main { max-width: 1100px; margin: 0 auto; padding: 16px 24px 48px; }
        h1 { font-size: 24px; margin: 12px 0 4px; }
        h2 { font-size: 17px; margin: 28px 0 8px; }
        .muted { color: var(--muted); }
        .months a { color: var(--accent); text-decoration: none; margin: 0 6px; }
        .tiles { display: grid; grid-template-columns: repeat(auto-fit, minmax(180px, 1fr)); gap: 12px; margin: 12px 0; }
        .tile { background: var(--card); border: 1px solid var(--line); border-radius: 8px; padding: 12px 14px; }
        .tile > span { display: block; color: var(--muted); font-size: 13px; }
        .tile strong { font-size: 22px; }
        table { width: 100%; border-collapse: collapse; background: var(--card); border: 1px solid var(--line); border-radius: 8px; }
        th, td { text-align: left; padding: 7px 10px; border-bottom: 1px solid var(--line); font-size: 14px; }
        th { color: var(--muted); font-weight: 600; }
        th a { color: inherit; }
        td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
        .ok { color: var(--ok); } .bad { color: var(--bad); }
        .money { cursor: help; }
        figure.chart { margin: 0; background: var(--card); border: 1px solid var(--line); border-radius: 8px; padding: 8px; }
        svg.chart { width: 100%; height: auto; display: block; }
        svg .grid { stroke: var(--line); } svg .axis { fill: var(--muted); font-size: 11px; }
        .legend { list-style: none; display: flex; flex-wrap: wrap; gap: 14px; padding: 4px 8px; margin: 0; font-size: 13px; }
        .s0 { fill: #2f5bea; } .s1 { fill: #f59e0b; } .s2 { fill: #10b981; } .s3 { fill: #ef4444; }
        .s4 { fill: #8b5cf6; } .s5 { fill: #06b6d4; } .s6 { fill: #84cc16; } .s7 { fill: #ec4899; }
        svg.bar { vertical-align: middle; } svg.bar .track { fill: var(--line); } svg.bar .spent { fill: var(--accent); }
        svg.bar .held { fill: #9db2f7; }
        form.login, form.key { display: flex; gap: 8px; align-items: center; margin: 16px 0; flex-wrap: wrap; }
        input { font: inherit; padding: 7px 9px; border: 1px solid var(--line); border-radius: 6px; min-width: 320px; }
        button { font: inherit; padding: 7px 14px; border: 1px solid var(--accent); background: var(--accent); color: #fff; border-radius: 6px; cursor: pointer; }
        nav button { background: none; color: var(--muted); border-color: var(--line); padding: 4px 10px; }
        .error { color: var(--bad); }
        code { font-size: 13px; }
        """

    /// `/usage`: works from the key alone, kept in this tab's session storage (never in a URL or
    /// a cookie), and reads only `/v1/usage` and `/v1/usage/export`, which answer for the key's
    /// own customer.
    static let keyHolderPage = HTML.page(title: "Your usage", nav: false, body: """
        <noscript><p>This page needs JavaScript to send your key. Without it, ask <code>GET /v1/usage</code> with your
        key as a bearer token.</p></noscript>
        <form id="key-form" class="key">
        <label for="key">API key</label>
        <input id="key" type="password" autocomplete="off" placeholder="sk-…" required>
        <button type="submit">Show my usage</button>
        </form>
        <p id="error" class="error" role="alert"></p>
        <section id="usage" hidden>
        <p class="muted">Customer <span id="customer"></span>, <span id="period"></span> (UTC).
        <button id="download" type="button">Download CSV</button> <button id="forget" type="button">Forget key</button></p>
        <section class="tiles">
        <div class="tile"><span>Budget</span><strong id="budget"></strong></div>
        <div class="tile"><span>Spent</span><strong id="spent"></strong></div>
        <div class="tile"><span>Held</span><strong id="held"></strong></div>
        <div class="tile"><span>Remaining</span><strong id="remaining"></strong></div>
        </section>
        <h2>Spend per day</h2>
        <figure class="chart" id="chart"></figure>
        <h2>Per model</h2>
        <table id="models"><thead><tr><th>Model</th><th class="num">Requests</th><th class="num">Prompt tokens</th>
        <th class="num">Completion tokens</th><th class="num">Cost</th></tr></thead><tbody></tbody></table>
        </section>
        <script src="/usage/usage.js"></script>
        """)

    static let keyHolderScript = #"""
        "use strict";
        (function () {
          const $ = (id) => document.getElementById(id);
          const SVG = "http://www.w3.org/2000/svg";
          const storedKey = () => sessionStorage.getItem("lmsvr_key");

          // Decimal dollars to nano-dollars, exactly (BigInt: no floating point near money).
          function nanos(text) {
            const negative = text.startsWith("-");
            const [whole, fraction = ""] = (negative ? text.slice(1) : text).split(".");
            const value = BigInt(whole) * 1000000000n + BigInt((fraction + "000000000").slice(0, 9));
            return negative ? -value : value;
          }
          // Exact dollars with at least two decimals, as the gateway writes amounts.
          function decimal(n) {
            const text = (n < 0n ? -n : n).toString().padStart(10, "0");
            let fraction = text.slice(-9);
            while (fraction.length > 2 && fraction.endsWith("0")) fraction = fraction.slice(0, -1);
            return (n < 0n ? "-" : "") + text.slice(0, -9) + "." + fraction;
          }
          function grouped(n) { return n.toString().replace(/\B(?=(\d{3})+(?!\d))/g, ","); }
          // As the operator's pages show money: cents from a cent up, else two significant digits.
          function rounded(n) {
            if (n === 0n) return "$0";
            const sign = n < 0n ? "-" : "", m = n < 0n ? -n : n;
            if (m >= 10000000n) {
              const cents = (m + 5000000n) / 10000000n;
              return sign + "$" + grouped(cents / 100n) + "." + (cents % 100n).toString().padStart(2, "0");
            }
            const digits = m.toString().padStart(9, "0");
            const first = digits.search(/[1-9]/);
            return sign + "$0." + digits.slice(0, first + 2).replace(/0+$/, "");
          }
          function money(element, text) {
            element.textContent = text === null ? "unlimited" : rounded(nanos(text));
            if (text !== null) { element.title = "$" + text; element.dataset.nanos = nanos(text).toString(); }
          }
          function el(name, attributes, parent) {
            const node = document.createElementNS(SVG, name);
            for (const [k, v] of Object.entries(attributes)) node.setAttribute(k, v);
            if (parent) parent.appendChild(node);
            return node;
          }

          function chart(period, daily) {
            const figure = $("chart");
            figure.replaceChildren();
            const [year, month] = period.split("-").map(Number);
            const today = new Date().toISOString().slice(0, 10);
            const days = [];
            for (let d = 1; d <= 31; d++) {
              const day = period + "-" + String(d).padStart(2, "0");
              if (new Date(Date.UTC(year, month - 1, d)).getUTCMonth() !== month - 1 || day > today) break;
              days.push(day);
            }
            const totals = {};
            for (const row of daily) totals[row.model] = (totals[row.model] || 0n) + nanos(row.cost_usd);
            const models = Object.keys(totals).sort((a, b) => (totals[b] > totals[a] ? 1 : totals[b] < totals[a] ? -1 : a < b ? -1 : 1));
            const byDay = {};
            for (const row of daily) (byDay[row.day] = byDay[row.day] || {})[row.model] = nanos(row.cost_usd);
            let max = 0n;
            for (const day of days) {
              const t = Object.values(byDay[day] || {}).reduce((a, b) => a + b, 0n);
              if (t > max) max = t;
            }
            // Four gridlines a round step apart (1, 2 or 5 × 10^n nano-dollars), as the operator's charts.
            const quarter = (max + 3n) / 4n;
            let magnitude = 1n;
            while (magnitude <= quarter / 10n) magnitude *= 10n;
            const step = quarter === 0n ? 0n : [1n, 2n, 5n, 10n].map((k) => k * magnitude).find((v) => v >= quarter);
            const top = step * 4n;
            const width = 760, height = 240, left = 72, bottom = 28, topMargin = 10;
            const plotW = width - left - 8, plotH = height - bottom - topMargin, slot = plotW / Math.max(days.length, 1);
            const svg = el("svg", { class: "chart", viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": "spend per day by model" });
            for (let line = 0; line <= 4; line++) {
              const y = topMargin + plotH - plotH * line / 4;
              el("line", { class: "grid", x1: left, x2: width - 8, y1: y, y2: y }, svg);
              el("text", { class: "axis", x: left - 6, y: y + 4, "text-anchor": "end" }, svg).textContent = "$" + decimal(step * BigInt(line));
            }
            days.forEach((day, i) => {
              const x = left + slot * i + slot * 0.15;
              let y = topMargin + plotH;
              models.forEach((model, s) => {
                const amount = (byDay[day] || {})[model];
                if (!amount || top === 0n) return;
                const h = plotH * Number(amount) / Number(top);
                y -= h;
                const rect = el("rect", { class: "s" + (s % 8), x, y, width: Math.max(2, slot * 0.7), height: Math.max(h, 0.5),
                                          "data-day": day, "data-series": model, "data-nanos": amount.toString() }, svg);
                el("title", {}, rect).textContent = `${day} ${model}: $${daily.find((r) => r.day === day && r.model === model).cost_usd}`;
              });
              if (i === 0 || (i + 1) % 5 === 0 || i === days.length - 1) {
                el("text", { class: "axis", x: x + slot * 0.35, y: height - 8, "text-anchor": "middle" }, svg).textContent = String(i + 1);
              }
            });
            figure.appendChild(svg);
            const legend = document.createElement("ul");
            legend.className = "legend";
            models.forEach((model, s) => {
              const item = document.createElement("li");
              const swatch = el("svg", { width: 10, height: 10 }, item);
              el("rect", { class: "s" + (s % 8), width: 10, height: 10 }, swatch);
              item.append(" " + model);
              legend.appendChild(item);
            });
            figure.appendChild(legend);
          }

          function render(u) {
            $("customer").textContent = u.customer_id;
            $("period").textContent = u.period;
            money($("budget"), u.budget_usd);
            money($("spent"), u.spent_usd);
            money($("held"), u.held_usd);
            money($("remaining"), u.remaining_usd);
            chart(u.period, u.daily || []);
            const body = $("models").tBodies[0];
            body.replaceChildren();
            for (const m of u.by_model) {
              const row = body.insertRow();
              row.dataset.model = m.model;
              row.insertCell().textContent = m.model;
              for (const n of [m.requests, m.prompt_tokens, m.completion_tokens]) {
                const cell = row.insertCell();
                cell.className = "num";
                cell.textContent = grouped(n);
              }
              const cost = row.insertCell();
              cost.className = "num";
              money(cost, m.cost_usd);
            }
            $("key-form").hidden = true;
            $("usage").hidden = false;
          }

          async function load() {
            const key = storedKey();
            if (!key) { $("key-form").hidden = false; $("usage").hidden = true; return; }
            $("error").textContent = "";
            let response;
            try {
              response = await fetch("/v1/usage", { headers: { Authorization: "Bearer " + key }, cache: "no-store" });
            } catch (e) {
              $("error").textContent = "The gateway could not be reached.";
              return;
            }
            if (!response.ok) {
              let message = "The gateway refused the key (" + response.status + ").";
              try { const body = await response.json(); message = (body.error && (body.error.message || body.error)) || message; } catch (e) {}
              if (response.status === 401 || response.status === 403) sessionStorage.removeItem("lmsvr_key");
              $("error").textContent = String(message);
              $("key-form").hidden = false;
              $("usage").hidden = true;
              return;
            }
            render(await response.json());
          }

          $("key-form").addEventListener("submit", (event) => {
            event.preventDefault();
            sessionStorage.setItem("lmsvr_key", $("key").value.trim());
            $("key").value = "";
            load();
          });
          $("forget").addEventListener("click", () => {
            sessionStorage.removeItem("lmsvr_key");
            $("usage").hidden = true;
            $("key-form").hidden = false;
          });
          $("download").addEventListener("click", async () => {
            const response = await fetch("/v1/usage/export?format=csv", { headers: { Authorization: "Bearer " + storedKey() } });
            if (!response.ok) { $("error").textContent = "The export failed (" + response.status + ")."; return; }
            const link = document.createElement("a");
            link.href = URL.createObjectURL(await response.blob());
            link.download = "usage-" + $("period").textContent + ".csv";
            document.body.appendChild(link);
            link.click();
            link.remove();
          });
          load();
        })();
        """#
}
