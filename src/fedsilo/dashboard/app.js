// The fedsilo dashboard. Every value from the run store (run, institution and metric names,
// reasons, numbers) reaches the page as text (textContent, setAttribute), never as HTML: a
// name such as <img onerror=...> shows as those characters. Served as a file, so the page's
// Content-Security-Policy forbids inline script.
"use strict";
const COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b",
                "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"];
const NS = "http://www.w3.org/2000/svg";
const TOKEN = new URLSearchParams(location.search).get("token");
let selected = null;

async function api(path) {
  const res = await fetch(path, {headers: TOKEN ? {"X-Fedsilo-Token": TOKEN} : {}});
  if (res.status === 401)
    throw new Error("this dashboard needs its token: open the link that `fedsilo dashboard` " +
                    "printed (…/?token=…)");
  if (!res.ok) throw new Error("the dashboard answered " + res.status);
  return res.json();
}

function el(tag, attrs, parent, text) {
  const node = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  if (parent) parent.appendChild(node);
  return node;
}

function html(tag, parent, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined) node.textContent = text;
  if (className) node.className = className;
  if (parent) parent.appendChild(node);
  return node;
}

function legendItem(parent, color, label) {
  const item = html("span", parent);
  html("i", item).style.background = color;  // CSSOM, allowed by the CSP (no style attribute)
  item.appendChild(document.createTextNode(label));
}

function fmt(v) {
  if (v === null || v === undefined || Number.isNaN(v)) return "—";
  if (Number.isInteger(v)) return String(v);
  return Math.abs(v) >= 1000 ? v.toLocaleString(undefined, {maximumFractionDigits: 0})
                             : v.toFixed(4);
}

function axes(svg, xs, ys) {
  svg.replaceChildren();
  const W = svg.clientWidth || 500, H = svg.clientHeight || 260, P = 40;
  const xmin = Math.min(...xs), xmax = Math.max(...xs, xmin + 1);
  let ymin = Math.min(...ys), ymax = Math.max(...ys);
  if (ymin === ymax) { ymin -= 0.5; ymax += 0.5; }
  const X = x => P + (x - xmin) / (xmax - xmin) * (W - 2 * P);
  const Y = y => H - P + 10 - (y - ymin) / (ymax - ymin) * (H - 2 * P);
  el("line", {x1: P, y1: H - P + 10, x2: W - P, y2: H - P + 10, stroke: "#888"}, svg);
  el("line", {x1: P, y1: 20, x2: P, y2: H - P + 10, stroke: "#888"}, svg);
  for (let i = 0; i <= 4; i++) {
    const y = ymin + (ymax - ymin) * i / 4;
    const label = Number.isInteger(ymin) && Number.isInteger(ymax) && (ymax - ymin) % 4 === 0
      ? String(y) : fmt(y).slice(0, 6);
    el("text", {x: 4, y: Y(y) + 4, "font-size": 11, fill: "#555"}, svg, label);
  }
  const step = Math.max(1, Math.ceil((xmax - xmin) / 10));
  for (let x = Math.ceil(xmin); x <= xmax; x += step)
    el("text", {x: X(x) - 3, y: H - P + 24, "font-size": 11, fill: "#555"}, svg, String(x));
  el("text", {x: W / 2, y: H - 2, "font-size": 11, fill: "#555"}, svg, "round");
  return {X, Y, W, H, P};
}

const known = v => v !== null && v !== undefined;  // the store serves NaN/Inf as null

function drawMetric(run) {
  const svg = document.getElementById("chart-metric");
  const legend = document.getElementById("legend-metric");
  const metric = run.metric;
  document.getElementById("metric-title").textContent = metric + " per round (test splits)";
  const series = {};
  for (const m of run.institution_metrics) {
    if (m.name !== metric || !known(m.value)) continue;
    (series[m.institution] = series[m.institution] || []).push([m.round, m.value]);
  }
  const fed = run.rounds.filter(r => known(r.federated[metric]))
                        .map(r => [r.round, r.federated[metric]]);
  const all = Object.values(series).flat().concat(fed);
  legend.replaceChildren();
  if (!all.length) { svg.replaceChildren(); return; }
  const {X, Y} = axes(svg, all.map(p => p[0]), all.map(p => p[1]));
  const names = Object.keys(series).sort();
  names.forEach((name, i) => {
    const color = COLORS[i % COLORS.length];
    el("polyline", {points: series[name].map(p => X(p[0]) + "," + Y(p[1])).join(" "),
                    fill: "none", stroke: color, "stroke-width": 1.5, class: "series",
                    "data-institution": name}, svg);
    legendItem(legend, color, name);
  });
  el("polyline", {points: fed.map(p => X(p[0]) + "," + Y(p[1])).join(" "), fill: "none",
                  stroke: "#000", "stroke-width": 3, class: "series",
                  "data-institution": "federated"}, svg);
  legendItem(legend, "#000", "federated (weighted)");
}

function drawParticipation(run) {
  const svg = document.getElementById("chart-participation");
  const counts = {};
  for (const p of run.participation) {
    const c = counts[p.round] = counts[p.round] || {accepted: 0, rejected: 0};
    c[p.status === "accepted" ? "accepted" : "rejected"] += 1;
  }
  const rounds = Object.keys(counts).map(Number).sort((a, b) => a - b);
  if (!rounds.length) { svg.replaceChildren(); return; }
  const tops = rounds.map(r => counts[r].accepted + counts[r].rejected);
  const {X, Y} = axes(svg, rounds.concat([rounds[rounds.length - 1] + 1]), [0].concat(tops));
  const w = Math.max(2, (X(rounds[0] + 1) - X(rounds[0])) * 0.8);
  for (const r of rounds) {
    const a = counts[r].accepted, j = counts[r].rejected;
    el("rect", {x: X(r), y: Y(a), width: w, height: Y(0) - Y(a), fill: "#2a9d8f",
                class: "bar-accepted", "data-round": r}, svg);
    if (j) el("rect", {x: X(r), y: Y(a + j), width: w, height: Y(a) - Y(a + j),
                       fill: "#e63946", class: "bar-rejected", "data-round": r}, svg);
  }
}

function drawEpsilon(run) {
  const svg = document.getElementById("chart-epsilon");
  const pts = run.rounds.filter(r => known(r.epsilon)).map(r => [r.round, r.epsilon]);
  if (!pts.length) {
    svg.replaceChildren();
    el("text", {x: 20, y: 40, fill: "#7a8794", id: "no-epsilon"}, svg,
       "no differential privacy in this run");
    return;
  }
  const {X, Y} = axes(svg, pts.map(p => p[0]), [0].concat(pts.map(p => p[1])));
  el("polyline", {points: pts.map(p => X(p[0]) + "," + Y(p[1])).join(" "), fill: "none",
                  stroke: "#6a4c93", "stroke-width": 2, class: "series",
                  "data-institution": "epsilon"}, svg);
}

function drawComparison(run) {
  const table = document.getElementById("comparison");
  const c = run.comparison;
  table.replaceChildren();
  if (!c) {
    html("td", html("tr", table), "no comparison (deployment, or compare = false, or still " +
         "running)", "muted");
    return;
  }
  if (c.references) {  // a vertical run: the label holder's metric per reference
    const top = html("tr", html("thead", table));
    ["model", c.metric].forEach((h, i) => html("th", top, h, i ? "num" : ""));
    const body = html("tbody", table);
    for (const [name, m] of Object.entries(c.references)) {
      const tr = html("tr", body);
      tr.dataset.institution = name;
      html("td", tr, name);
      html("td", tr, fmt(m[c.metric]), "num");
    }
    return;
  }
  const personal = ["finetuned", "ditto"].filter(k => known(c.overall[k]));
  const cols = ["local_only", "local_only_everywhere", "federated", "pooled"].concat(personal);
  const head = ["institution", "local-only", "local-only (all tests)", "federated", "pooled"]
    .concat(personal.map(k => k + " (personal)"));
  const top = html("tr", html("thead", table));
  head.forEach((h, i) => html("th", top, h, i ? "num" : ""));
  const body = html("tbody", table);
  for (const row of c.institutions.concat([c.overall])) {
    const tr = html("tr", body);
    tr.dataset.institution = row.institution;
    html("td", tr, String(row.institution));
    for (const k of cols) html("td", tr, fmt(row[k]), "num");
  }
}

async function showRun(runId) {
  selected = runId;
  for (const tr of document.querySelectorAll("#runs tbody tr"))
    tr.classList.toggle("selected", tr.dataset.runId === runId);
  const run = await api("/api/runs/" + encodeURIComponent(runId));
  document.getElementById("title").textContent = run.run_id;
  const last = run.rounds[run.rounds.length - 1];
  const value = last && last.federated[run.metric];
  document.getElementById("summary").textContent =
    `${run.strategy}, ${run.mode}, ${run.status}; ${run.rounds.length} rounds recorded` +
    (value !== undefined && last ? `; federated ${run.metric} ${fmt(value)}` : "");
  drawMetric(run); drawParticipation(run); drawEpsilon(run); drawComparison(run);
  const audit = await api("/api/runs/" + encodeURIComponent(runId) + "/audit");
  const badge = document.getElementById("audit");
  badge.className = audit.ok ? "ok" : "bad";
  badge.textContent = audit.ok ? `audit chain verified (${audit.rounds} rounds)`
                               : `audit chain BROKEN: ${audit.problem}`;
}

async function refresh() {
  const runs = await api("/api/runs");
  const body = document.querySelector("#runs tbody");
  body.replaceChildren();
  for (const r of runs) {
    const tr = html("tr", body);
    tr.dataset.runId = r.run_id;
    html("td", tr, r.run_id);
    html("td", tr, r.strategy);
    html("td", tr, r.status, "status-" + r.status);
    html("td", tr, String(r.last ?? 0), "num");
    tr.addEventListener("click", () => showRun(r.run_id).catch(report));
    if (r.run_id === selected) tr.classList.add("selected");
  }
  document.getElementById("refreshed").textContent =
    "(live, " + new Date().toLocaleTimeString() + ")";
  if (selected) await showRun(selected);
}

function report(error) {
  document.getElementById("refreshed").textContent = "(" + error.message + ")";
}

refresh().catch(report);
setInterval(() => refresh().catch(report), 2000);
