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
  renderStream(s);
  renderMaps(s.feed);
  renderFailures(s.feed);
  renderTable();
}

// Colours of functions: a fixed palette picked by a hash of the name, so a function keeps
// its colour across reloads and dashboards.
const PALETTE = ["#2f6fdb", "#2a9d4b", "#e08a1e", "#8e44ad", "#16a2b8", "#b5651d", "#c2185b", "#6b8e23", "#5c6bc0", "#00897b"];
function colour(name) {
  let h = 0;
  for (let i = 0; i < name.length; i++) h = (h * 31 + name.charCodeAt(i)) >>> 0;
  return PALETTE[h % PALETTE.length];
}

// The task stream: a row per engine, a bar per sampled task from its start to its end on
// that engine, coloured by function (failed ones red), over the last STREAM seconds.
function renderStream(s) {
  const svg = $("stream-chart");
  const st = s.feed.stream;
  const W = 1000, H = 200, span = 30000;
  // A row per engine; with hundreds of engines, only those with tasks in the window (rows
  // of a fraction of a pixel would show nothing).
  const ids = s.engines.length > 200 ? [] : s.engines.map((e) => e.id);
  const known = new Set(ids);
  for (const b of st.bars) {
    if (!known.has(b[0])) {
      known.add(b[0]);
      ids.push(b[0]);
    }
  }
  ids.sort((a, b) => a - b);
  const rowOf = new Map(ids.map((id, i) => [id, i]));
  const rowH = ids.length ? H / ids.length : H;
  let out = "";
  if (rowH >= 6) {
    for (let i = 1; i < ids.length; i++) out += `<line class="row" x1="0" x2="${W}" y1="${(i * rowH).toFixed(1)}" y2="${(i * rowH).toFixed(1)}"/>`;
  }
  const pad = rowH > 4 ? 1 : 0;
  // Failures last, so that they are drawn over the tasks around them.
  const bars = st.bars.filter((b) => b[4]).concat(st.bars.filter((b) => !b[4]));
  for (const [engine, f, start, end, ok] of bars) {
    const x = (start / span) * W;
    // Very short tasks still show as a sliver (failures a little wider).
    const w = Math.max(((end - start) / span) * W, ok ? 1.5 : 4);
    const y = rowOf.get(engine) * rowH + pad;
    const fill = ok ? colour(st.functions[f]) : "#d33";
    out += `<rect class="${ok ? "ok" : "failed"}" data-engine="${engine}" data-function="${esc(st.functions[f])}" x="${x.toFixed(1)}" y="${y.toFixed(1)}" width="${w.toFixed(1)}" height="${Math.max(rowH - 2 * pad, 0.5).toFixed(1)}" fill="${fill}"/>`;
  }
  svg.innerHTML = out;
  const names = st.functions.slice().sort();
  $("stream-legend").innerHTML =
    names.map((n) => `<span><i style="background:${colour(n)}"></i>${esc(n)}</span>`).join("") +
    (st.bars.some((b) => !b[4]) ? `<span><i style="background:#d33"></i>failed</span>` : "");
  $("stream-note").textContent = !s.feed.live
    ? "(no activity feed from the controller: events = false, or an older controller)"
    : `(last 30 s, ${ids.length} engine rows; ${st.bars.length.toLocaleString("en")} of ${st.finished.toLocaleString("en")} tasks drawn)`;
}

function renderMaps(feed) {
  if (!feed.maps.length) {
    $("maps").innerHTML = `<p class="none">none</p>`;
    return;
  }
  $("maps").innerHTML = feed.maps
    .map((m) => {
      const pct = m.total ? (100 * m.done) / m.total : 100;
      return `<div class="map${m.done >= m.total ? " done" : ""}" data-client="${m.client}"><b>${esc(m.function)}</b> · client ${m.client} · ` +
        `<span class="progress">${m.done.toLocaleString("en")} / ${m.total.toLocaleString("en")}</span>` +
        `<div class="bar"><span style="width:${pct.toFixed(1)}%"></span></div></div>`;
    })
    .join("");
}

function renderFailures(feed) {
  const time = (ms) => new Date(ms).toLocaleTimeString("en-GB");
  $("failure-rows").innerHTML = feed.failures
    .map(
      (f) =>
        `<tr><td>${time(f.t_ms)}</td><td>${esc(f.task)}</td><td class="num">${f.engine ?? ""}</td>` +
        `<td>${esc(f.function)}</td><td>${esc(f.kind)}</td><td class="msg">${esc(f.message)}</td></tr>`
    )
    .join("");
  $("failure-count").textContent = feed.failures.length
    ? `(${feed.failures.length}${feed.failures_unlisted ? `, ${feed.failures_unlisted} more not listed` : ""})`
    : "(none)";
}

const bytes = (n) =>
  n == null ? "" : n >= 1 << 30 ? (n / (1 << 30)).toFixed(1) + " GiB" : (n / (1 << 20)).toFixed(1) + " MiB";

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
    const va = a[sortKey] ?? -1, vb = b[sortKey] ?? -1;
    const c = typeof va === "number" ? va - vb : String(va).localeCompare(String(vb));
    return c !== 0 ? c * sortDir : a.id - b.id;
  });
  // One string and one innerHTML a second: fast enough for thousands of rows.
  $("engine-rows").innerHTML = rows
    .map(
      (e) =>
        `<tr data-engine="${e.id}" class="${esc(e.state)}"><td class="num">${e.id}</td><td>${esc(e.host)}</td>` +
        `<td class="num">${e.pid}</td><td>${esc(e.state)}</td><td class="num">${e.outstanding}</td>` +
        `<td class="num">${e.done}</td><td class="num">${e.failed}</td><td class="num">${e.hwm}</td>` +
        `<td class="num cpu">${e.cpu_percent == null ? "" : e.cpu_percent.toFixed(1)}</td><td class="num rss">${bytes(e.rss_bytes)}</td></tr>`
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
