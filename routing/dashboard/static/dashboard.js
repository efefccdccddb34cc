// agentstream supervisor dashboard: plain JavaScript, no build step, no dependencies.
//
// One EventSource on `events`: a `snapshot` (every row) when it connects, then `update`s (the
// rows that changed and the calls that left the board). Rows are kept by call SID; a render
// rewrites only the rows that changed and reorders the table only when the ranking moved.
// Opening a call fetches `api/calls/<sid>` and refetches it when an update names that call.
// Read-only: nothing on this page changes a call.
"use strict";

(function () {
  const rows = new Map();      // call_sid -> row data
  const elements = new Map();  // call_sid -> <tr>
  const dirty = new Set();
  let order = [];
  let clockOffsetMs = 0;       // server clock minus ours, for durations
  let selected = null;
  let scheduled = false;
  let detailPending = false;

  const stats = { updates: 0, renders: 0, lastRenderMs: 0, maxRenderMs: 0, totalRenderMs: 0,
                  rows: 0, connected: false };
  window.agentstreamDashboard = stats;

  const $ = (id) => document.getElementById(id);
  const tbody = $("rows");

  function esc(text) {
    return String(text == null ? "" : text).replace(/[&<>"']/g, (c) => (
      { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
  }

  function duration(row) {
    const end = row.ended_at_ms || (Date.now() + clockOffsetMs);
    const s = Math.max(0, Math.round((end - row.started_at_ms) / 1000));
    return Math.floor(s / 60) + ":" + String(s % 60).padStart(2, "0");
  }

  function sentimentCell(row) {
    if (row.sentiment == null) return '<span class="rule">–</span>';
    const cls = row.sentiment < -0.2 ? "neg" : row.sentiment > 0.2 ? "pos" : "";
    const arrow = row.trend < -0.05 ? "▼" : row.trend > 0.05 ? "▲" : "";
    return '<span class="sent ' + cls + '">' + row.sentiment.toFixed(2) + "</span>" +
      (arrow ? '<span class="trend">' + arrow + "</span>" : "");
  }

  function keywordCell(row) {
    return Object.entries(row.keywords || {}).map(([cat, n]) =>
      '<span class="chip">' + esc(cat) + (n > 1 ? " ×" + n : "") + "</span>").join("");
  }

  function ruleCell(row) {
    const e = row.escalation;
    if (e) {
      return '<td class="esc-cell">⚠ ' + esc(e.rule_id) + " → " +
        esc(e.target_group) + '<small title="' + esc(e.reason) + '">' + esc(e.reason) +
        "</small></td>";
    }
    if (!row.near_rule) return '<td class="rule">–</td>';
    return '<td class="rule">' + esc(row.near_rule) + " " + Math.round(row.risk * 100) + "%</td>";
  }

  function rowHtml(row) {
    const pct = Math.round(row.risk * 100);
    const level = row.risk >= 0.75 ? "high" : row.risk >= 0.4 ? "mid" : "";
    return '<td class="risk"><div class="bar" title="' + pct + '%"><i class="' + level +
      '" style="width:' + pct + '%"></i></div></td>' +
      '<td><span class="sid">' + esc(row.call_sid) + "</span>" +
      '<small class="caller">' + esc(row.caller || "unknown caller") + "</small></td>" +
      "<td>" + esc(row.tenant) + '<small class="caller">' + esc(row.campaign) + "</small></td>" +
      '<td class="num dur">' + duration(row) + "</td>" +
      '<td class="num">' + sentimentCell(row) + "</td>" +
      '<td class="kw">' + keywordCell(row) + "</td>" + ruleCell(row);
  }

  function rankKey(a, b) {
    if (a.live !== b.live) return a.live ? -1 : 1;
    const ea = a.escalation ? 0 : 1, eb = b.escalation ? 0 : 1;
    if (ea !== eb) return ea - eb;
    if (a.risk !== b.risk) return b.risk - a.risk;
    return a.started_at_ms - b.started_at_ms;
  }

  function render() {
    scheduled = false;
    const t0 = performance.now();
    for (const sid of dirty) {
      const row = rows.get(sid);
      let tr = elements.get(sid);
      if (!row) {
        if (tr) tr.remove();
        elements.delete(sid);
        continue;
      }
      if (!tr) {
        tr = document.createElement("tr");
        tr.dataset.sid = sid;
        elements.set(sid, tr);
      }
      tr.className = (row.escalation ? "escalated " : "") + (row.live ? "" : "ended ") +
        (sid === selected ? "selected" : "");
      tr.innerHTML = rowHtml(row);
    }
    dirty.clear();
    const next = Array.from(rows.values()).sort(rankKey).map((r) => r.call_sid);
    if (next.length !== order.length || next.some((sid, i) => sid !== order[i])) {
      const frag = document.createDocumentFragment();
      for (const sid of next) frag.appendChild(elements.get(sid));
      tbody.appendChild(frag);
      order = next;
    }
    let live = 0, escalated = 0;
    for (const r of rows.values()) {
      if (r.live) live += 1;
      if (r.escalation) escalated += 1;
    }
    $("count-live").textContent = live;
    $("count-escalated").textContent = escalated;
    $("empty").hidden = rows.size > 0;
    const ms = performance.now() - t0;
    stats.renders += 1;
    stats.lastRenderMs = ms;
    stats.totalRenderMs += ms;
    stats.maxRenderMs = Math.max(stats.maxRenderMs, ms);
    stats.rows = rows.size;
  }

  function schedule() {
    if (!scheduled) {
      scheduled = true;
      requestAnimationFrame(render);
    }
  }

  function apply(message, replace) {
    stats.updates += 1;
    clockOffsetMs = message.now_ms - Date.now();
    if (replace) {
      for (const sid of rows.keys()) dirty.add(sid);
      rows.clear();
    }
    for (const row of message.rows) {
      rows.set(row.call_sid, row);
      dirty.add(row.call_sid);
    }
    for (const sid of message.removed || []) {
      rows.delete(sid);
      dirty.add(sid);
    }
    schedule();
    if (selected && (replace || message.rows.some((r) => r.call_sid === selected) ||
                     (message.touched || []).includes(selected))) {
      loadDetail(selected);
    }
  }

  // --- one call ------------------------------------------------------------------------------

  function chart(detail) {
    const svg = $("d-chart");
    const pts = detail.sentiment_series;
    const W = 600, H = 160, P = 14;
    let html = '<line class="zero" x1="0" x2="' + W + '" y1="' + H / 2 + '" y2="' + H / 2 + '"/>' +
      '<text x="4" y="12">+1</text><text x="4" y="' + (H - 4) + '">−1</text>';
    if (pts.length) {
      const t0 = pts[0][0], t1 = pts[pts.length - 1][0];
      const x = (t) => (t1 === t0 ? W / 2 : P + (W - 2 * P) * (t - t0) / (t1 - t0));
      const y = (v) => H / 2 - v * (H / 2 - P);
      const escId = escalationUtterance(detail);
      html += '<polyline class="line" points="' +
        pts.map((p) => x(p[0]).toFixed(1) + "," + y(p[1]).toFixed(1)).join(" ") + '"/>';
      const lines = detail.transcript.filter((l) => l.sentiment != null);
      pts.forEach((p, i) => {
        const line = lines[i];
        const cls = line && line.utterance_id === escId ? "esc" : p[1] < -0.2 ? "neg" : "";
        html += '<circle class="' + cls + '" r="4" cx="' + x(p[0]).toFixed(1) + '" cy="' +
          y(p[1]).toFixed(1) + '"><title>' + p[1].toFixed(2) + "</title></circle>";
      });
    }
    svg.innerHTML = html;
  }

  function escalationUtterance(detail) {
    const e = detail.decisions.find((d) => d.decision === "escalate");
    return e ? e.utterance_id : null;
  }

  function offset(ms) {
    const s = Math.round(ms / 1000);
    return Math.floor(s / 60) + ":" + String(s % 60).padStart(2, "0");
  }

  function showDetail(detail) {
    $("detail").hidden = false;
    $("d-title").textContent = detail.call_sid;
    $("d-meta").textContent = [detail.caller || "unknown caller", detail.tenant + " / " +
      detail.campaign, duration(detail), detail.live ? "live" : "ended"].join(" · ");
    const e = detail.escalation;
    $("d-escalation").hidden = !e;
    if (e) {
      $("d-escalation").textContent = "Escalated by rule " + e.rule_id + " to " +
        e.target_group + ": " + e.reason;
    }
    chart(detail);
    const escId = escalationUtterance(detail);
    $("d-transcript").innerHTML = detail.transcript.map((l) => {
      const cls = (l.sentiment != null && l.sentiment < -0.2 ? "neg " : "") +
        (l.utterance_id === escId ? "esc" : "");
      const s = l.sentiment == null ? "" : '<span class="s">' + l.sentiment.toFixed(2) +
        (l.categories.length ? " · " + esc(l.categories.join(", ")) : "") + "</span>";
      return '<li class="' + cls + '"><span class="at">' + offset(l.start_ms) + "</span>" +
        esc(l.text) + s + "</li>";
    }).join("") + (detail.partial ? '<li class="partial">' + esc(detail.partial) + "…</li>" : "");
    $("d-hits").innerHTML = detail.keyword_hits.length ? detail.keyword_hits.map((h) =>
      '<li><span class="chip alert">' + esc(h.category) + ": " + esc(h.matched) +
      "</span></li>").join("") : '<li class="rule">none</li>';
    const decisions = detail.decisions.filter((d) => d.decision === "escalate")
      .concat(detail.decisions.filter((d) => d.decision !== "escalate").slice(-5));
    $("d-decisions").innerHTML = decisions.length ? decisions.map((d) =>
      '<li class="' + esc(d.decision) + '">' + esc(d.decision) +
      (d.rule_id ? " (" + esc(d.rule_id) + ")" : "") + ": " + esc(d.reason) + "</li>").join("")
      : '<li class="rule">none yet</li>';
  }

  async function loadDetail(sid) {
    if (detailPending) return;
    detailPending = true;
    try {
      const response = await fetch("api/calls/" + encodeURIComponent(sid),
        { credentials: "same-origin" });
      if (response.ok && sid === selected) showDetail(await response.json());
    } finally {
      detailPending = false;
    }
  }

  tbody.addEventListener("click", (event) => {
    const tr = event.target.closest("tr");
    if (!tr) return;
    const previous = selected;
    selected = tr.dataset.sid;
    for (const sid of [previous, selected]) if (sid && rows.has(sid)) dirty.add(sid);
    schedule();
    loadDetail(selected);
  });
  $("d-close").addEventListener("click", () => {
    const previous = selected;
    selected = null;
    $("detail").hidden = true;
    if (previous && rows.has(previous)) { dirty.add(previous); schedule(); }
  });

  // --- live feed -----------------------------------------------------------------------------

  function connect() {
    const source = new EventSource("events");
    const conn = $("connection");
    source.addEventListener("open", () => {
      stats.connected = true;
      conn.textContent = "live";
      conn.className = "conn on";
    });
    source.addEventListener("error", () => {
      stats.connected = false;
      conn.textContent = "reconnecting…";
      conn.className = "conn off";
    });
    source.addEventListener("snapshot", (e) => apply(JSON.parse(e.data), true));
    source.addEventListener("update", (e) => apply(JSON.parse(e.data), false));
  }

  // Durations tick without a server round trip.
  setInterval(() => {
    for (const [sid, tr] of elements) {
      const row = rows.get(sid);
      const cell = tr.querySelector(".dur");
      if (row && row.live && cell) cell.textContent = duration(row);
    }
  }, 1000);

  connect();
})();
