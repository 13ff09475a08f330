// Line charts in inline SVG, one line per revision (a canary beside its baseline). No library.
"use strict";

const ZdCharts = (() => {
  const COLORS = ["#1f5fbf", "#d9480f", "#2b8a3e", "#862e9c", "#e67700", "#0b7285"];
  const NS = "http://www.w3.org/2000/svg";

  function el(name, attrs) {
    const node = document.createElementNS(NS, name);
    for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, value);
    return node;
  }

  // Consecutive points at most this many periods apart are joined; a longer gap (no datapoint:
  // the router measured nothing, or the value is missing) breaks the line.
  const JOIN_PERIODS = 1.5;
  const NO_TARGET = "no target";

  // [[at, v], ...] sorted by time -> runs of points with no gap wider than `period` * JOIN_PERIODS.
  function segments(points, period) {
    const runs = [];
    let run = [];
    for (const point of points) {
      if (run.length && point[0] - run[run.length - 1][0] > period * JOIN_PERIODS) {
        runs.push(run);
        run = [];
      }
      run.push(point);
    }
    if (run.length) runs.push(run);
    return runs;
  }

  // series: [{at, revision, ...}], value: point -> number|null; options: {period (s, default 10),
  // labels: {revision: text for the legend}}. Returns a <div class=chart>.
  function lineChart(title, series, value, unit, options) {
    const period = (options && options.period) || 10;
    const labels = (options && options.labels) || {};
    const box = document.createElement("div");
    box.className = "chart";
    const heading = document.createElement("h3");
    heading.textContent = title;
    box.appendChild(heading);
    const width = 300, height = 140, pad = { l: 34, r: 6, t: 8, b: 18 };
    const svg = el("svg", { viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": title });
    const byRevision = new Map();
    for (const point of series) {
      const v = value(point);
      if (v === null || v === undefined || Number.isNaN(v)) continue;
      const key = point.revision || NO_TARGET;  // answered by the router itself (503)
      if (!byRevision.has(key)) byRevision.set(key, []);
      byRevision.get(key).push([point.at, v]);
    }
    const all = [...byRevision.values()].flat();
    if (all.length === 0) {
      const text = el("text", { x: width / 2, y: height / 2, "text-anchor": "middle",
        fill: "#98a2b3", "font-size": "12" });
      text.textContent = "no traffic measured yet";
      svg.appendChild(text);
      box.appendChild(svg);
      return box;
    }
    const xs = all.map((p) => p[0]);
    const x0 = Math.min(...xs), x1 = Math.max(...xs, x0 + 10);
    const yMax = Math.max(...all.map((p) => p[1]), 1e-9) * 1.1;
    const sx = (x) => pad.l + ((x - x0) / (x1 - x0)) * (width - pad.l - pad.r);
    const sy = (y) => height - pad.b - (y / yMax) * (height - pad.t - pad.b);
    for (const frac of [0, 0.5, 1]) {
      const y = sy(yMax * frac);
      svg.appendChild(el("line", { x1: pad.l, x2: width - pad.r, y1: y, y2: y, stroke: "#e3e6ec" }));
      const label = el("text", { x: pad.l - 4, y: y + 4, "text-anchor": "end", fill: "#98a2b3",
        "font-size": "10" });
      label.textContent = formatNumber(yMax * frac);
      svg.appendChild(label);
    }
    const span = el("text", { x: width - pad.r, y: height - 4, "text-anchor": "end",
      fill: "#98a2b3", "font-size": "10" });
    const spanSeconds = x1 - x0;
    span.textContent = `${spanSeconds < 120 ? `${Math.round(spanSeconds)} s` : `${Math.round(spanSeconds / 60)} min`}, ${unit}`;
    svg.appendChild(span);
    const legend = document.createElement("div");
    legend.className = "legend";
    let index = 0;
    for (const [revision, points] of byRevision) {
      const color = COLORS[index++ % COLORS.length];
      points.sort((a, b) => a[0] - b[0]);
      for (const run of segments(points, period)) {
        if (run.length === 1) {  // a lone datapoint between gaps: a dot, no line to draw
          svg.appendChild(el("circle", { cx: sx(run[0][0]), cy: sy(run[0][1]), r: 3, fill: color }));
          continue;
        }
        const path = run.map((p) => `${sx(p[0]).toFixed(1)},${sy(p[1]).toFixed(1)}`).join(" ");
        svg.appendChild(el("polyline", { points: path, fill: "none", stroke: color,
          "stroke-width": "2", "stroke-linejoin": "round" }));
      }
      const item = document.createElement("span");
      item.innerHTML = `<i style="background:${color}"></i>`;
      item.appendChild(document.createTextNode(labels[revision] || (revision === NO_TARGET ? revision : revision.slice(0, 8))));
      legend.appendChild(item);
    }
    box.appendChild(svg);
    box.appendChild(legend);
    return box;
  }

  function formatNumber(n) {
    if (n >= 1000) return `${(n / 1000).toFixed(1)}k`;
    if (n >= 10) return n.toFixed(0);
    return n.toFixed(n === 0 ? 0 : 1);
  }

  return { lineChart, segments };
})();
