// Orchestra console: the "Last hour" charts. Reads GET /console/api/series (per model: rates
// and TTFT p50/p95 per interval, and the state-change markers) and draws each chart as inline
// SVG. No library: a path per line, a vertical line per marker.
(function () {
  "use strict";
  const NS = "http://www.w3.org/2000/svg";
  const W = 300;  // the drawing's units: the SVG is stretched to its column's width
  const H = 64;
  const PAD = 2;
  const CHARTS = [
    { title: "requests/s", lines: [["requests_per_s", "c-req"]] },
    { title: "errors/s", lines: [["errors_per_s", "c-err"], ["limited_per_s", "c-lim"]] },
    { title: "TTFT p50 / p95", unit: "s", lines: [["ttft_p50_s", "c-p50"], ["ttft_p95_s", "c-p95"]] },
    { title: "tokens/s", lines: [["tokens_per_s", "c-tok"]] },
  ];
  // a marker's class by the state the model went to
  const MARKS = { starting: "m-starting", ready: "m-ready", failed: "m-bad", backoff: "m-bad",
                  down: "m-bad" };
  const refreshMs = Math.max(Number(document.body.dataset.refreshMs) || 1000, 2000);
  window.chartUpdates = 0;  // how many times the charts were drawn from a reply

  function svg(name, attrs) {
    const node = document.createElementNS(NS, name);
    for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, String(value));
    return node;
  }

  function html(name, className, text) {
    const node = document.createElement(name);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function figure(value, unit) {
    if (unit === "s") return value < 1 ? `${Math.round(value * 1000)} ms` : `${value.toFixed(2)} s`;
    return value >= 100 ? value.toFixed(0) : value >= 10 ? value.toFixed(1) : value.toFixed(2);
  }

  function clock(seconds) {
    return new Date(seconds * 1000).toLocaleTimeString();
  }

  // The path of one column: a gap where it has no value (an interval without a first byte);
  // a point alone between gaps is drawn as a dash two units long.
  function path(values, x, y) {
    let d = "";
    let run = 0;
    values.forEach((v, i) => {
      if (v === null || v === undefined) {
        if (run === 1) d += "h2 ";
        run = 0;
        return;
      }
      d += `${run ? "L" : "M"}${x(i).toFixed(1)} ${y(v).toFixed(1)} `;
      run += 1;
    });
    if (run === 1) d += "h2";
    return d.trim();
  }

  function chart(spec, columns, series, markers) {
    const n = columns[spec.lines[0][0]].length;
    let max = 0;
    for (const [key] of spec.lines) {
      for (const v of columns[key]) if (v !== null && v > max) max = v;
    }
    const top = max > 0 ? max * 1.1 : 1;
    const x = (i) => PAD + (i / Math.max(1, n - 1)) * (W - 2 * PAD);
    const y = (v) => H - PAD - (v / top) * (H - 2 * PAD);
    const box = html("figure", "chart");
    box.dataset.max = String(max);
    box.appendChild(html("figcaption", "", `${spec.title} · max ${figure(max, spec.unit)}`));
    const plot = svg("svg", { viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: "none",
                              height: H, role: "img" });
    plot.appendChild(svg("line", { x1: 0, y1: H - PAD, x2: W, y2: H - PAD, class: "axis" }));
    for (const m of markers) {
      const at = x((m.t - series.t0) / series.step_s);
      const line = svg("line", { x1: at, y1: 0, x2: at, y2: H,
                                 class: `marker ${MARKS[m.state] || "m-off"}` });
      const title = svg("title", {});
      title.textContent = `${m.model}: ${m.was} → ${m.state} at ${clock(m.t)}`;
      line.appendChild(title);
      plot.appendChild(line);
    }
    for (const [key, cls] of spec.lines) {
      const d = path(columns[key], x, y);
      if (d) plot.appendChild(svg("path", { d, class: `line ${cls}`, "data-key": key }));
    }
    box.appendChild(plot);
    return box;
  }

  function draw(series) {
    const host = document.getElementById("charts");
    const names = Object.keys(series.models);
    if (!names.length) {
      host.replaceChildren(html("p", "muted", "no answers yet"));
      return;
    }
    const rows = names.map((name) => {
      const row = html("div", "chart-row");
      row.dataset.model = name;
      row.appendChild(html("div", "chart-name", name));
      const markers = series.markers.filter((m) => m.model === name);
      for (const spec of CHARTS) row.appendChild(chart(spec, series.models[name], series, markers));
      return row;
    });
    const n = series.models[names[0]].requests_per_s.length;
    const axis = html("p", "muted axis-note",
      `${clock(series.t0)} to ${clock(series.now)}, one point per ${series.step_s} s (${n} points)`);
    host.replaceChildren(...rows, axis);
    window.chartUpdates += 1;
  }

  async function refresh() {
    try {
      const reply = await fetch("/console/api/series");
      if (reply.ok) draw(await reply.json());
    } catch (err) {
      // the next refresh tries again
    }
  }

  refresh();
  setInterval(refresh, refreshMs);
})();
