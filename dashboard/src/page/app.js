// The dashboard page: reads snapshots from the server (one at load, then a server-sent
// event a second) and draws the counters, two SVG charts and the engines table.
// No libraries: the page is this file, index.html and style.css, served by the binary.
"use strict";

// The token came in the URL; the server also set it as a cookie, but passing it on keeps
// the page working where cookies are off.
const token = new URLSearchParams(location.search).get("token");
const withToken = (path) => (token ? path + "?token=" + encodeURIComponent(token) : path);

const CHART_SECONDS = 300;
let latest = null;
let sortKey = "id";
let sortDir = 1;

const $ = (id) => document.getElementById(id);
const esc = (s) =>
  String(s).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
const fmt = (n) => (n >= 100 || Number.isInteger(n) ? Math.round(n).toLocaleString("en") : n.toFixed(1));

function render(s) {
  latest = s;
  const conn = $("conn");
  conn.className = "conn " + (s.connected ? "up" : "down");
  conn.textContent = s.connected ? "live" : "controller unreachable — retrying";
  conn.title = s.error || "";
  const c = s.controller;
  $("controller").textContent = c
    ? `controller ${c.host}:${c.pid} · ${c.scheduler} · up ${fmt(c.uptime_s)} s · ${c.clients} client(s)` +
      (c.store ? ` · store ${c.store}` : "")
    : "";
  const t = s.tasks;
  const last = s.history.length ? s.history[s.history.length - 1] : null;
  const rate = last ? last.done_per_s + last.failed_per_s : 0;
  const alive = s.engines.filter((e) => e.state === "alive").length;
  const cells = [
    ["engines", `${s.engines.length}`, `${alive} alive`],
    ["queued", t.queued],
    ["waiting", t.waiting],
    ["running", t.running],
    ["done", t.done],
    ["failed", t.failed],
    ["tasks/s", fmt(rate)],
  ];
  $("counts").innerHTML = cells
    .map(([k, v, sub]) => `<div id="count-${esc(k.replace("/", "-"))}"><b>${esc(v)}</b>${esc(k)}${sub ? " · " + esc(sub) : ""}</div>`)
    .join("");
  $("rate-now").textContent = `now ${fmt(rate)}`;
  $("queue-now").textContent = `now ${t.queued}`;
  const cutoff = s.t - CHART_SECONDS;
  const points = s.history.filter((p) => p.t >= cutoff);
  chart($("rate-chart"), points, [
    { cls: "line", value: (p) => p.done_per_s + p.failed_per_s, area: true },
    { cls: "line failed", value: (p) => p.failed_per_s },
  ], s.t);
  chart($("queue-chart"), points, [{ cls: "line", value: (p) => p.queued, area: true }], s.t);
  renderTable();
}

// A line chart of the last CHART_SECONDS: x is time (now at the right), y from 0 to the max.
function chart(svg, points, series, now) {
  const W = 600, H = 160, top = 14, bottom = H - 16;
  let max = 0;
  for (const p of points) for (const s of series) max = Math.max(max, s.value(p));
  max = max > 0 ? niceCeil(max) : 1;
  const x = (t) => ((t - (now - CHART_SECONDS)) / CHART_SECONDS) * W;
  const y = (v) => bottom - (v / max) * (bottom - top);
  let out = "";
  for (const f of [0, 0.5, 1]) {
    const yy = y(max * f);
    out += `<line class="grid" x1="0" x2="${W}" y1="${yy}" y2="${yy}"/>`;
    out += `<text x="4" y="${yy - 2}">${fmt(max * f)}</text>`;
  }
  out += `<text x="${W - 4}" y="${H - 3}" text-anchor="end">now</text>`;
  out += `<text x="4" y="${H - 3}">−${CHART_SECONDS / 60} min</text>`;
  if (points.length > 1) {
    for (const s of series) {
      const coords = points.map((p) => `${x(p.t).toFixed(1)},${y(s.value(p)).toFixed(1)}`);
      if (s.area) {
        out += `<path class="area" d="M${x(points[0].t).toFixed(1)},${bottom} L${coords.join(" L")} L${x(points[points.length - 1].t).toFixed(1)},${bottom} Z"/>`;
      }
      out += `<path class="${s.cls}" d="M${coords.join(" L")}"/>`;
    }
  }
  svg.innerHTML = out;
}

function niceCeil(v) {
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 5, 10]) if (v <= m * p) return m * p;
  return 10 * p;
}

function renderTable() {
  if (!latest) return;
  const rows = latest.engines.slice();
  rows.sort((a, b) => {
    const va = a[sortKey], vb = b[sortKey];
    const c = typeof va === "number" ? va - vb : String(va).localeCompare(String(vb));
    return c !== 0 ? c * sortDir : a.id - b.id;
  });
  // One string and one innerHTML a second: fast enough for thousands of rows.
  $("engine-rows").innerHTML = rows
    .map(
      (e) =>
        `<tr data-engine="${e.id}" class="${esc(e.state)}"><td class="num">${e.id}</td><td>${esc(e.host)}</td>` +
        `<td class="num">${e.pid}</td><td>${esc(e.state)}</td><td class="num">${e.outstanding}</td>` +
        `<td class="num">${e.done}</td><td class="num">${e.failed}</td><td class="num">${e.hwm}</td></tr>`
    )
    .join("");
  $("engine-count").textContent = `(${rows.length})`;
  for (const th of document.querySelectorAll("#engines th")) {
    th.classList.toggle("sorted", th.dataset.key === sortKey);
    th.classList.toggle("asc", th.dataset.key === sortKey && sortDir === 1);
    th.classList.toggle("desc", th.dataset.key === sortKey && sortDir === -1);
  }
}

for (const th of document.querySelectorAll("#engines th")) {
  th.addEventListener("click", () => {
    if (sortKey === th.dataset.key) sortDir = -sortDir;
    else {
      sortKey = th.dataset.key;
      sortDir = 1;
    }
    renderTable();
  });
}

function markDown(why) {
  const conn = $("conn");
  conn.className = "conn down";
  conn.textContent = why;
}

// The event stream reconnects by itself when the dashboard server drops it; if the browser
// gives up (the server answered with an error), try again every few seconds.
function connect() {
  const source = new EventSource(withToken("api/events"));
  source.addEventListener("snapshot", (ev) => render(JSON.parse(ev.data)));
  source.onerror = () => {
    markDown("dashboard server unreachable — retrying");
    if (source.readyState === EventSource.CLOSED) setTimeout(connect, 3000);
  };
}

fetch(withToken("api/snapshot"))
  .then((r) => (r.ok ? r.json() : Promise.reject(r.status)))
  .then(render)
  .catch(() => {});
connect();
