// Reef node dashboard: polls /api/dashboard once a second and redraws. No framework, no
// build step; every value from the node is written with textContent.
"use strict";

const POLL_MS = 1000;
const TIMEOUT_MS = 3000;
const SVG_NS = "http://www.w3.org/2000/svg";
const SERIES = [
  ["local", "served from this node's disk"],
  ["peer", "fetched from a peer's cache"],
  ["origin", "fetched from the origin"],
];

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.className = v;
    else node.setAttribute(k, v);
  }
  for (const c of children) {
    if (c === null || c === undefined) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

function svg(tag, attrs) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
  return node;
}

// Provider and arrangement ids differ from their first characters, peer ids (which all
// start with 12D3KooW) from their last.
const short = (id) => (id || "").slice(0, 8);
const tail = (peer) => (peer || "").slice(-8);
const plural = (n, word) => n + " " + word + (n === 1 ? "" : "s");
const pct = (permille) => (permille / 10).toFixed(1) + "%";

function bytes(n) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i === 0 ? n.toFixed(0) : n.toFixed(1)) + " " + units[i];
}

function providerName(data, id) {
  return data.names[id] || "provider " + short(id);
}

function bar(utilPermille, demandPermille) {
  const wrap = el("div", { class: "bar", title: "utilisation " + pct(utilPermille) + ", demand " + pct(demandPermille) });
  const fill = el("div", { class: "fill" + (utilPermille >= 1000 ? " over" : "") });
  fill.style.width = Math.min(utilPermille / 10, 100) + "%";
  const demand = el("div", { class: "demand" });
  demand.style.left = Math.min(demandPermille / 10, 100) + "%";
  wrap.append(fill, demand);
  return wrap;
}

function renderNode(data) {
  const n = data.node;
  const p = n.provider;
  const box = document.getElementById("node");
  box.replaceChildren(el("span", {},
    el("strong", {}, p.name || "provider " + short(p.id)),
    p.certified ? " (certified)" : " (uncertified)",
    " · node ", el("code", { title: n.peer_id }, tail(n.peer_id)),
    " · region ", n.region,
    " · ", n.joined ? "joined" : "not joined",
    " · ", plural(n.connected_peers, "peer"),
    " · cache ", plural(n.cache.objects, "object"), ", ", bytes(n.cache.bytes), " of ", bytes(n.cache.max_bytes),
    n.dns ? " · DNS " + n.dns.addr + " (" + n.dns.zone + ")" : null,
  ));
}

function renderProviders(data) {
  const box = document.getElementById("providers");
  const groups = data.load.providers;
  if (!groups.length) {
    box.replaceChildren(el("p", { class: "empty" }, "no node listed yet"));
    return;
  }
  const out = [];
  for (const g of groups) {
    const nodes = data.load.nodes.filter((n) => n.provider.id === g.id);
    const rows = nodes.map((n) => el("tr", { "data-peer": n.peer_id, class: n.peer_id === data.node.peer_id ? "self" : "" },
      el("td", {}, el("code", { title: n.peer_id }, tail(n.peer_id)), n.peer_id === data.node.peer_id ? " (this node)" : ""),
      el("td", { class: "barcell" }, bar(n.utilisation_permille, n.demand_permille)),
      el("td", { class: "num" }, pct(n.utilisation_permille)),
      el("td", { class: "num" }, pct(n.demand_permille)),
      el("td", { class: "num" }, n.req_per_s),
      el("td", { class: "num" }, bytes(n.egress_bytes_per_s) + "/s"),
      el("td", { class: "num" }, pct(n.hit_ratio_permille)),
    ));
    out.push(el("div", { class: "provider", "data-provider": g.id },
      el("h3", {}, g.name || "provider " + short(g.id), " ",
        el("small", {}, plural(g.nodes, "node") + " · mean utilisation " + pct(g.utilisation_permille) +
          " · demand " + pct(g.demand_permille) + " · " + g.req_per_s + " req/s")),
      el("table", { class: "nodes" },
        el("thead", {}, el("tr", {},
          el("th", {}, "node"), el("th", {}, "load"), el("th", {}, "util."), el("th", {}, "demand"),
          el("th", {}, "req/s"), el("th", {}, "egress"), el("th", {}, "hit ratio"))),
        el("tbody", {}, ...rows)),
    ));
  }
  box.replaceChildren(...out);
}

function slaCell(a) {
  if (!a.sla) return el("td", { class: "muted" }, a.role === "primary" && a.status === "active" ? "no SLA" : "–");
  const s = a.sla;
  const p95 = s.p95_ms === null ? "–" : s.p95_ms + " ms";
  const avail = s.availability_permille === null ? "–" : pct(s.availability_permille);
  const verdict = s.breach ? el("span", { class: "badge bad" }, "breach: " + s.breach)
    : s.samples ? el("span", { class: "badge ok" }, "ok") : el("span", { class: "badge" }, "warming up");
  return el("td", {}, verdict, " p95 ", p95, " / ", s.max_p95_ms, " ms · available ", avail, " / ", pct(s.min_availability_permille));
}

function renderArrangements(data) {
  const box = document.getElementById("arrangements");
  const list = data.arrangements.slice().sort((a, b) =>
    (a.status === b.status ? 0 : a.status === "active" ? -1 : 1) || a.id.localeCompare(b.id));
  if (!list.length) {
    box.replaceChildren(el("p", { class: "empty" }, "no arrangement"));
    return;
  }
  const rows = list.map((a) => {
    const other = a.role === "primary" ? a.peer : a.primary;
    const usage = a.role === "peer"
      ? a.served.requests + " req · " + bytes(a.served.bytes) + " served"
      : a.redirected + " req sent to the peer";
    return el("tr", { "data-arrangement": a.id, class: a.status },
      el("td", {}, el("code", { title: a.id }, short(a.id))),
      el("td", {}, a.basis.replace("_", "-")),
      el("td", {}, a.role === "primary" ? "primary (they serve us)" : "peer (we serve them)"),
      el("td", {}, el("span", { class: "badge " + (a.status === "active" ? "ok" : "") }, a.status),
        a.end_reason ? " (" + a.end_reason + ")" : ""),
      el("td", { title: other }, providerName(data, other)),
      el("td", {}, a.services.join(", ")),
      el("td", { class: "num" }, Math.round(a.share * 100) + "%"),
      el("td", {}, usage),
      slaCell(a),
    );
  });
  box.replaceChildren(el("table", { class: "arrangements" },
    el("thead", {}, el("tr", {},
      el("th", {}, "id"), el("th", {}, "basis"), el("th", {}, "role"), el("th", {}, "state"),
      el("th", {}, "other party"), el("th", {}, "services"), el("th", {}, "share"),
      el("th", {}, "usage so far"), el("th", {}, "SLA health"))),
    el("tbody", {}, ...rows)));
}

function renderMix(data) {
  const W = 600, H = 160;
  const mix = data.mix;
  // The last minute at least, growing to the five minutes the node keeps.
  const SPAN = Math.min(300, Math.max(60, mix.length));
  const chart = svg("svg", { viewBox: `0 0 ${W} ${H + 16}`, class: "chart", role: "img" });
  const now = mix.length ? mix[mix.length - 1].at_ms : Date.now();
  let max = 1;
  for (const s of mix) max = Math.max(max, s.local + s.peer + s.origin);
  const x = (at) => W - ((now - at) / 1000) * (W / SPAN);
  const y = (v) => H - (v / max) * H;
  // Stacked areas, bottom up: local, peer, origin.
  let below = mix.map(() => 0);
  for (const [key] of SERIES) {
    const top = mix.map((s, i) => below[i] + s[key]);
    if (mix.length) {
      const pts = mix.map((s, i) => `${x(s.at_ms).toFixed(1)},${y(top[i]).toFixed(1)}`);
      const base = mix.map((s, i) => `${x(s.at_ms).toFixed(1)},${y(below[i]).toFixed(1)}`).reverse();
      chart.append(svg("polygon", { points: pts.concat(base).join(" "), class: "area " + key }));
    }
    below = top;
  }
  chart.append(svg("line", { x1: 0, y1: H, x2: W, y2: H, class: "axis" }));
  const label = (tx, ty, text, anchor) => {
    const t = svg("text", { x: tx, y: ty, "text-anchor": anchor || "start", class: "label" });
    t.textContent = text;
    chart.append(t);
  };
  label(2, 12, max + " req/s");
  label(2, H + 13, SPAN % 60 === 0 ? "−" + SPAN / 60 + " min" : "−" + SPAN + " s");
  label(W - 2, H + 13, "now", "end");
  const last = mix.length ? mix[mix.length - 1] : { local: 0, peer: 0, origin: 0 };
  document.getElementById("mix").replaceChildren(chart);
  document.getElementById("mix-legend").replaceChildren(...SERIES.map(([key, what]) =>
    el("li", { class: key }, el("span", { class: "swatch " + key }), key + " (" + what + "): " + last[key] + "/s")));
}

function renderEvents(data) {
  const box = document.getElementById("events");
  if (!data.events.length) {
    box.replaceChildren(el("li", { class: "empty" }, "nothing yet"));
    return;
  }
  box.replaceChildren(...data.events.map((e) => el("li", { class: "event " + e.kind, "data-kind": e.kind },
    el("time", {}, new Date(e.at_ms).toLocaleTimeString()), " ",
    el("span", { class: "kind" }, e.kind.replace("_", " ")), " ", e.text)));
}

function render(data) {
  renderNode(data);
  renderProviders(data);
  renderArrangements(data);
  renderMix(data);
  renderEvents(data);
  const updated = document.getElementById("updated");
  updated.className = "";
  updated.textContent = "updated " + new Date().toLocaleTimeString();
  document.body.dataset.ready = "1";
}

async function poll() {
  const ctl = new AbortController();
  const timer = setTimeout(() => ctl.abort(), TIMEOUT_MS);
  try {
    const resp = await fetch("/api/dashboard", { signal: ctl.signal, cache: "no-store" });
    if (!resp.ok) throw new Error("HTTP " + resp.status);
    render(await resp.json());
  } catch (e) {
    const updated = document.getElementById("updated");
    updated.className = "stale";
    updated.textContent = "node not answering (" + e.message + "); retrying";
  } finally {
    clearTimeout(timer);
    setTimeout(poll, POLL_MS);
  }
}

poll();
