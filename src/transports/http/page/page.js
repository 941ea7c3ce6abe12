// flujo's live KPI page: reads the server-sent events of /v1/stream/kpis (one JSON
// snapshot per `kpis` event) and draws them. No framework, no external request:
// tables are DOM, charts are hand-drawn SVG. Every number a test reads carries a
// `data-testid`.
"use strict";

(() => {
  const CATEGORIES = ["electronics", "clothing", "home", "beauty"];
  const WEATHERS = ["sunny", "cloudy", "rainy", "foggy", "snowy", "stormy"];
  const MAX_POINTS = 120; // snapshots kept for the charts over time
  const RETRY_MS = 3000; // after the server refused or closed the stream
  const SVG_NS = "http://www.w3.org/2000/svg";
  const history = []; // [{t, revenue: {category: x}, count: {category: n}}]

  const byId = (id) => document.querySelector(`[data-testid="${id}"]`);

  function setText(id, text) {
    const el = byId(id);
    if (el && el.textContent !== text) el.textContent = text;
  }

  const num = (x, digits) =>
    x === null || x === undefined
      ? "—"
      : x.toLocaleString("en-US", { minimumFractionDigits: digits, maximumFractionDigits: digits });
  const int = (x) => num(x, 0);
  const money = (x) => (x === null || x === undefined ? "—" : "$" + num(x, 2));

  function el(tag, attrs, text) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function svgEl(tag, attrs, text) {
    const node = document.createElementNS(SVG_NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    if (text !== undefined) node.textContent = text;
    return node;
  }

  // The fixed parts: a row per category, a price chart per category, a row per weather.
  function build() {
    const rows = document.getElementById("sales-rows");
    for (const c of [...CATEGORIES, "total"]) {
      const tr = el("tr", c === "total" ? { class: "total" } : {});
      const name = el("td", { class: "name" });
      if (c !== "total") name.append(el("span", { class: `swatch ${c}` }));
      name.append(c);
      tr.append(name);
      for (const field of ["count", "quantity", "revenue", "avg-price", "price-min", "price-max"]) {
        tr.append(el("td", { "data-testid": `sales-${field}-${c}` }, "—"));
      }
      tr.append(el("td", c === "total" ? {} : { "data-testid": `monitored-product-${c}` }, c === "total" ? "" : "—"));
      rows.append(tr);
    }
    const legend = document.getElementById("legend");
    for (const c of CATEGORIES) {
      const li = el("li");
      li.append(el("span", { class: `swatch ${c}` }), c);
      legend.append(li);
    }
    const prices = document.getElementById("price-charts");
    for (const c of CATEGORIES) {
      const fig = el("figure");
      const cap = el("figcaption");
      cap.append(
        el("span", { class: `swatch ${c}` }),
        `${c} · `,
        el("b", { "data-testid": `price-product-${c}` }, "—"),
        " · last ",
        el("span", { "data-testid": `price-last-${c}` }, "—"),
        " · ",
        el("span", { "data-testid": `price-points-${c}` }, "0"),
        " prices",
      );
      fig.append(cap, svgEl("svg", { class: "chart", "data-testid": `chart-price-${c}` }));
      prices.append(fig);
    }
    const weather = document.getElementById("weather-rows");
    for (const w of WEATHERS) {
      const tr = el("tr");
      const bar = svgEl("svg", { class: "bar", viewBox: "0 0 100 10", preserveAspectRatio: "none" });
      bar.append(svgEl("rect", { x: 0, y: 0, height: 10, width: 0, "data-testid": `weather-bar-${w}` }));
      const cell = el("td", { class: "bar-cell" });
      cell.append(bar);
      tr.append(el("td", { class: "name" }, w), el("td", { "data-testid": `weather-count-${w}` }, "0"), cell);
      weather.append(tr);
    }
  }

  // A line chart in `svg`: `series` = [{cls, points: [[x, y], ...]}]; y from 0
  // (or from the lowest value with `fromMin`); `fmtY` labels the y axis, `fmtX`
  // the first and last x.
  function lineChart(svg, series, { fmtY, fmtX, fromMin = false, width = 600, height = 200 }) {
    const [left, right, top, bottom] = [64, 12, 10, 22];
    svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
    const points = series.flatMap((s) => s.points);
    const nodes = [];
    if (points.length === 0) {
      nodes.push(svgEl("text", { x: width / 2, y: height / 2, "text-anchor": "middle", class: "empty" }, "waiting for data"));
      svg.replaceChildren(...nodes);
      return;
    }
    const xs = points.map((p) => p[0]);
    const ys = points.map((p) => p[1]);
    let [x0, x1] = [Math.min(...xs), Math.max(...xs)];
    let [y0, y1] = [fromMin ? Math.min(...ys) : 0, Math.max(...ys)];
    if (x1 === x0) x1 = x0 + 1;
    if (y1 === y0) {
      y1 = y0 + (y0 === 0 ? 1 : Math.abs(y0) * 0.1);
      if (fromMin) y0 -= y1 - y0;
    }
    const sx = (x) => left + ((x - x0) / (x1 - x0)) * (width - left - right);
    const sy = (y) => height - bottom - ((y - y0) / (y1 - y0)) * (height - top - bottom);
    for (let i = 0; i <= 4; i++) {
      const y = y0 + ((y1 - y0) * i) / 4;
      nodes.push(svgEl("line", { x1: left, x2: width - right, y1: sy(y), y2: sy(y), class: "grid" }));
      nodes.push(svgEl("text", { x: left - 6, y: sy(y) + 4, "text-anchor": "end", class: "axis" }, fmtY(y)));
    }
    if (fmtX) {
      nodes.push(svgEl("text", { x: left, y: height - 6, class: "axis" }, fmtX(x0)));
      nodes.push(svgEl("text", { x: width - right, y: height - 6, "text-anchor": "end", class: "axis" }, fmtX(x1)));
    }
    for (const s of series) {
      if (s.points.length === 0) continue;
      const d = s.points.map(([x, y]) => `${sx(x).toFixed(1)},${sy(y).toFixed(1)}`).join(" ");
      nodes.push(svgEl("polyline", { points: d, class: s.cls }));
    }
    svg.replaceChildren(...nodes);
  }

  const clock = (t) => new Date(t).toLocaleTimeString("en-GB");
  const compact = (y) =>
    Math.abs(y) >= 1e6 ? num(y / 1e6, 1) + "M" : Math.abs(y) >= 1e4 ? num(y / 1e3, 0) + "k" : num(y, y % 1 === 0 ? 0 : 1);

  function renderSales(sales) {
    for (const c of [...CATEGORIES, "total"]) {
      const s = c === "total" ? sales.total : sales.categories[c];
      if (!s) continue;
      setText(`sales-count-${c}`, int(s.count));
      setText(`sales-quantity-${c}`, int(s.quantity_sum));
      setText(`sales-revenue-${c}`, money(s.revenue));
      setText(`sales-avg-price-${c}`, money(s.avg_price));
      setText(`sales-price-min-${c}`, money(s.price_min));
      setText(`sales-price-max-${c}`, money(s.price_max));
      if (c !== "total") setText(`monitored-product-${c}`, s.monitored_product ?? "—");
    }
  }

  function renderHistory() {
    const series = (field) =>
      CATEGORIES.map((c) => ({ cls: c, points: history.map((h) => [h.t, h[field][c]]) }));
    lineChart(byId("chart-revenue"), series("revenue"), { fmtY: (y) => "$" + compact(y), fmtX: clock });
    lineChart(byId("chart-count"), series("count"), { fmtY: compact, fmtX: clock });
  }

  function renderRanking(id, ranking, cells) {
    const body = byId(id);
    const rows = ranking.items.map((item, i) => {
      const tr = el("tr", { "data-testid": `${id}-${i + 1}` });
      tr.append(el("td", {}, String(i + 1)));
      for (const [field, text, cls] of cells(item)) {
        tr.append(el("td", { "data-testid": `${id}-${i + 1}-${field}`, class: cls || "" }, text));
      }
      return tr;
    });
    body.replaceChildren(...rows);
  }

  function renderPrices(prices) {
    for (const c of CATEGORIES) {
      const stream = prices[c];
      if (!stream) continue;
      const last = stream.prices.length ? stream.prices[stream.prices.length - 1] : null;
      setText(`price-product-${c}`, stream.product_id ?? "—");
      setText(`price-last-${c}`, money(last));
      setText(`price-points-${c}`, int(stream.prices.length));
      lineChart(
        byId(`chart-price-${c}`),
        [{ cls: c, points: stream.prices.map((p, i) => [i, p]) }],
        { fmtY: (y) => "$" + compact(y), fromMin: true, width: 300, height: 150 },
      );
    }
  }

  function renderTweets(tweets) {
    const t = tweets.total;
    setText("tweets-count-total", int(t.count));
    setText("tweets-avg-temperature", num(t.avg_temperature, 1));
    setText("tweets-avg-humidity", num(t.avg_humidity, 1));
    setText(
      "tweets-temperature-range",
      t.temperature_min === null ? "—" : `${num(t.temperature_min, 1)} – ${num(t.temperature_max, 1)}`,
    );
    const most = Math.max(1, ...WEATHERS.map((w) => tweets.weather[w] ?? 0));
    for (const w of WEATHERS) {
      const n = tweets.weather[w] ?? 0;
      setText(`weather-count-${w}`, int(n));
      byId(`weather-bar-${w}`).setAttribute("width", ((100 * n) / most).toFixed(2));
    }
  }

  function renderHealth(h) {
    setText("health-throughput", h.events_per_second === null ? "—" : num(h.events_per_second, 1));
    setText(
      "health-p99",
      h.p99_latency_seconds === null ? "—" : num(h.p99_latency_seconds * 1000, 2) + " ms",
    );
    setText("health-lag", h.consumer_lag === null ? "—" : int(h.consumer_lag));
    const ready = byId("health-ready");
    setText("health-ready", h.ready ? "ready" : "not ready");
    ready.classList.toggle("ready", h.ready);
    ready.classList.toggle("not-ready", !h.ready);
    setText("health-failing", h.failing.join("; "));
  }

  function render(snap) {
    setText("updated-at", clock(snap.at_ms));
    renderHealth(snap.health);
    const error = byId("store-error");
    error.hidden = snap.error === null;
    setText("store-error", snap.error === null ? "" : `store: ${snap.error} (showing the last numbers read)`);
    if (snap.error !== null) return;
    renderSales(snap.sales);
    const point = { t: snap.at_ms, revenue: {}, count: {} };
    for (const c of CATEGORIES) {
      const s = snap.sales.categories[c];
      point.revenue[c] = s ? s.revenue : 0;
      point.count[c] = s ? s.count : 0;
    }
    history.push(point);
    if (history.length > MAX_POINTS) history.shift();
    renderHistory();
    renderRanking("product-ranking", snap.products, (p) => [
      ["id", p.product_id, "name"],
      ["quantity", int(p.quantity)],
    ]);
    setText("products-total", int(snap.products.total));
    renderPrices(snap.prices);
    renderTweets(snap.tweets);
    renderRanking("location-ranking", snap.locations, (l) => [
      ["name", l.location, "name"],
      ["count", int(l.count)],
      ["avg-temperature", num(l.avg_temperature, 1)],
      ["avg-humidity", num(l.avg_humidity, 1)],
    ]);
    setText("locations-total", int(snap.locations.total));
  }

  function connection(state, text) {
    const badge = byId("connection-state");
    badge.dataset.state = state;
    setText("connection-state", text);
  }

  function connect() {
    connection("connecting", "connecting");
    const source = new EventSource("/v1/stream/kpis");
    source.addEventListener("open", () => connection("live", "live"));
    source.addEventListener("kpis", (event) => {
      connection("live", "live");
      render(JSON.parse(event.data));
    });
    source.addEventListener("error", () => {
      if (source.readyState === EventSource.CLOSED) {
        // Refused (e.g. 503: too many streams) or ended: try again a bit later.
        connection("closed", "disconnected, retrying");
        setTimeout(connect, RETRY_MS);
      } else {
        connection("reconnecting", "reconnecting");
      }
    });
  }

  build();
  renderHistory();
  connect();
})();
