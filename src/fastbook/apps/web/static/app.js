// fastbook edge page: renders the view the edge pushes (Server-Sent Events on /events) and sends
// orders to /api/orders. Plain DOM, no build step, no library. Text goes in with textContent only.
// Amounts stay the decimal strings the edge sends; they become numbers only to draw the chart.
"use strict";

const STALE_MS = 5000; // the edge pings every 2 s: this long without a message is a lost link
const $ = (id) => document.getElementById(id);
let lastMessage = 0;
let source = null;
let current = null;

function el(tag, text, cls) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (cls) node.className = cls;
  return node;
}

function setBadge(node, ok, text) {
  node.textContent = text;
  node.className = "badge " + (ok ? "ok" : "bad");
}

function setLive(live) {
  setBadge($("page-link"), live, live ? "page: live" : "page: DISCONNECTED");
  $("banner").hidden = live;
  document.body.classList.toggle("offline", !live);
  if (!live) setBadge($("broker-link"), false, "broker: unknown");
}

function connect() {
  if (source) source.close();
  source = new EventSource("/events");
  source.onmessage = (event) => {
    lastMessage = Date.now();
    current = JSON.parse(event.data);
    setLive(true);
    render(current);
  };
  source.addEventListener("ping", () => { lastMessage = Date.now(); setLive(true); });
  source.onerror = () => {
    setLive(false);
    // A refused stream (the edge restarting, a 503) closes for good: open a new one.
    if (source.readyState === EventSource.CLOSED) setTimeout(connect, 2000);
  };
}

setInterval(() => { if (Date.now() - lastMessage > STALE_MS) setLive(false); }, 1000);

// The last data each section was drawn from: a section is rebuilt only when its data changed, so
// a view that only moved the lag leaves the buttons under the pointer where they are.
const drawn = {};
function changed(section, data) {
  const key = JSON.stringify(data);
  if (drawn[section] === key) return false;
  drawn[section] = key;
  return true;
}

function render(view) {
  document.title = `${view.market} · ${view.client_id} · fastbook`;
  $("market").textContent = view.market;
  $("client").textContent = view.client_id;
  setBadge($("broker-link"), view.connected, view.connected ? "broker: connected" : "broker: DISCONNECTED");
  renderProof(view);
  if (changed("book", [view.bids, view.asks])) { renderLadder(view); drawChart(view); }
  if (changed("orders", view.orders)) renderOrders(view.orders);
  if (changed("trades", view.trades)) renderTrades(view.trades);
  if (changed("reports", view.reports)) renderReports(view.reports);
}

function renderProof(view) {
  const r = view.replica;
  $("proof-version").textContent = r.version;
  $("proof-hash").textContent = r.hash;
  $("proof-lag").textContent = r.lag === 0 ? "0 (at the head)" : `${r.lag} records behind`;
  $("proof-resyncs").textContent = r.resyncs;
  const head = view.head;
  let headText = "not seen yet";
  if (head) {
    headText = `v${head.version} ${head.hash}`;
    if (view.matches_head === true) headText += " ✓ same hash";
    else if (view.matches_head === false) headText += " ✗ DIFFERENT";
  }
  $("proof-head").textContent = headText;
  const verdict = $("proof-verified");
  if (view.verified && view.connected) {
    verdict.textContent = `✓ verified against the log at version ${r.version}`;
  } else if (r.mismatch) {
    verdict.textContent = `✗ diverged: ${r.mismatch} (resyncing)`;
  } else if (!view.connected) {
    verdict.textContent = `verified up to ${r.version}; broker disconnected`;
  } else {
    verdict.textContent = r.synced_once ? "catching up with the log…" : "syncing from the snapshot…";
  }
  verdict.className = "verdict " + (view.verified && view.connected ? "ok" : "bad");
}

function ladderRow(level, side, maxCum) {
  const tr = el("tr");
  tr.dataset.side = side;
  tr.dataset.price = level.price;
  const mine = el("td", level.mine ? `● ${level.mine}` : "", "mine");
  if (level.mine) tr.classList.add("has-mine");
  const total = el("td", level.cum, "total");
  const bar = el("div", null, "bar");
  bar.style.width = `${maxCum > 0 ? (100 * Number(level.cum)) / maxCum : 0}%`;  // drawing only
  total.appendChild(bar);
  tr.append(mine, el("td", level.price, "price"), el("td", level.qty), el("td", level.orders), total);
  tr.addEventListener("click", () => { $("ticket-price").value = level.price; });
  return tr;
}

function renderLadder(view) {
  const last = (levels) => (levels.length ? Number(levels[levels.length - 1].cum) : 0);
  const maxCum = Math.max(last(view.bids), last(view.asks));
  $("asks").replaceChildren(...view.asks.slice().reverse().map((l) => ladderRow(l, "sell", maxCum)));
  $("bids").replaceChildren(...view.bids.map((l) => ladderRow(l, "buy", maxCum)));
  const bid = view.bids[0], ask = view.asks[0];
  $("spread").textContent = bid && ask
    ? `spread ${(Number(ask.price) - Number(bid.price)).toFixed(ask.price.split(".")[1]?.length ?? 0)}`
    : (bid || ask ? "one-sided book" : "empty book");
}

function drawChart(view) {
  const canvas = $("depth-chart");
  const ratio = window.devicePixelRatio || 1;
  const w = canvas.clientWidth || 520, h = canvas.clientHeight || 260;
  if (canvas.width !== Math.round(w * ratio)) { canvas.width = Math.round(w * ratio); canvas.height = Math.round(h * ratio); }
  const g = canvas.getContext("2d");
  g.setTransform(ratio, 0, 0, ratio, 0, 0);
  g.clearRect(0, 0, w, h);
  const bids = view.bids.map((l) => [Number(l.price), Number(l.cum)]);
  const asks = view.asks.map((l) => [Number(l.price), Number(l.cum)]);
  g.fillStyle = "#8393a3";
  g.font = "12px system-ui, sans-serif";
  if (!bids.length && !asks.length) { g.fillText("empty book", w / 2 - 30, h / 2); return; }
  const prices = bids.concat(asks).map((p) => p[0]);
  let lo = Math.min(...prices), hi = Math.max(...prices);
  if (hi === lo) { lo -= 1; hi += 1; }
  const pad = (hi - lo) * 0.05;
  lo -= pad; hi += pad;
  const top = Math.max(...bids.concat(asks).map((p) => p[1])) * 1.1;
  const left = 8, right = w - 8, bottom = h - 20, upper = 8;
  const x = (p) => left + ((p - lo) / (hi - lo)) * (right - left);
  const y = (q) => bottom - (q / top) * (bottom - upper);
  const area = (points, start, color, fill) => {
    if (!points.length) return;
    g.beginPath();
    g.moveTo(x(points[0][0]), y(0));
    let prev = 0;
    for (const [p, q] of points) { g.lineTo(x(p), y(prev)); g.lineTo(x(p), y(q)); prev = q; }
    g.lineTo(x(start), y(prev));
    g.lineTo(x(start), y(0));
    g.closePath();
    g.fillStyle = fill; g.fill();
    g.strokeStyle = color; g.lineWidth = 1.5; g.stroke();
  };
  area(bids, lo, "#2fbf71", "rgba(47,191,113,0.25)");
  area(asks, hi, "#e5484d", "rgba(229,72,77,0.25)");
  g.fillStyle = "#8393a3";
  g.fillText(view.bids.length ? view.bids[view.bids.length - 1].price : "", left, h - 4);
  const askLabel = view.asks.length ? view.asks[view.asks.length - 1].price : "";
  g.fillText(askLabel, right - g.measureText(askLabel).width, h - 4);
  if (bids.length && asks.length) {
    const mid = `bid ${view.bids[0].price} | ask ${view.asks[0].price}`;
    g.fillText(mid, (left + right) / 2 - g.measureText(mid).width / 2, h - 4);
  }
}

function renderOrders(orders) {
  $("orders").replaceChildren(...orders.map((o) => {
    const tr = el("tr");
    tr.dataset.id = o.id;
    const button = el("button", "Cancel", "cancel");
    button.type = "button";
    button.dataset.id = o.id;
    button.addEventListener("click", () => send({ op: "cancel", id: o.id }, button));
    const cell = el("td");
    cell.appendChild(button);
    // ids are long (a session prefix and a counter): the tail tells this session's orders apart
    const id = el("td", o.id.length > 10 ? `…${o.id.slice(-8)}` : o.id, "id mono");
    id.title = o.id;
    tr.append(id, el("td", o.side, o.side), el("td", o.price), el("td", o.qty), cell);
    return tr;
  }));
  $("orders-empty").hidden = orders.length > 0;
}

const clock = (at) => (at ? new Date(at * 1000).toLocaleTimeString() : "–");

function renderTrades(trades) {
  $("trades").replaceChildren(...trades.map((t) => {
    const tr = el("tr");
    tr.append(el("td", clock(t.at)), el("td", t.price, t.taker_side), el("td", t.qty), el("td", t.taker_side, t.taker_side));
    return tr;
  }));
}

function describe(r) {
  switch (r.type) {
    case "trade": return `FILLED ${r.qty} @ ${r.price} ${r.liquidity} (${r.side}, ${r.remaining} left) ${r.id}`;
    case "accepted": return `ACCEPTED ${r.side} ${r.qty} @ ${r.price ?? "market"} ${r.id} seq ${r.seq}`;
    case "cancelled": return `CANCELLED ${r.qty ?? ""} ${r.id} (${r.reason})`;
    case "amended": return `AMENDED ${r.id} to ${r.qty} @ ${r.price}`;
    case "done": return `DONE ${r.id}`;
    case "cancelled_all": return `CANCELLED ALL (${r.count})`;
    case "rejected": return `REJECTED ${r.op ?? ""} ${r.id ?? ""}: ${r.code} ${r.message}`;
    default: return JSON.stringify(r);
  }
}

function renderReports(reports) {
  $("reports").replaceChildren(...reports.map((r) => el("li", `${clock(r.at)}  ${describe(r)}`, r.type)));
}

async function send(order, button) {
  const result = $("ticket-result");
  if (button) button.disabled = true;
  result.className = "result";
  result.textContent = `sending ${order.op}…`;
  try {
    const response = await fetch("/api/orders", {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(order),
    });
    const answer = await response.json();
    if (!response.ok) {
      result.textContent = `not done: ${answer.error}`;
      result.className = "result bad";
    } else {
      result.textContent = describe(answer);
      result.className = "result " + (answer.type === "rejected" ? "bad" : "ok");
    }
  } catch (error) {
    result.textContent = `not sent: ${error}`;
    result.className = "result bad";
  } finally {
    if (button) button.disabled = false;
  }
}

function ticketOrder() {
  const order = { op: "new", side: document.querySelector("input[name=side]:checked").value,
                  type: $("ticket-type").value, qty: $("ticket-qty").value.trim() };
  if (order.type === "limit") order.price = $("ticket-price").value.trim();
  if ($("ticket-tif").value !== "gtc") order.tif = $("ticket-tif").value;
  if ($("ticket-stp").value !== "none") order.stp = $("ticket-stp").value;
  if ($("ticket-post").checked) order.post_only = true;
  return order;
}

document.addEventListener("DOMContentLoaded", () => {
  $("ticket").addEventListener("submit", (event) => {
    event.preventDefault();
    send(ticketOrder(), $("ticket-submit"));
  });
  $("ticket-type").addEventListener("change", () => { $("ticket-price").disabled = $("ticket-type").value === "market"; });
  $("cancel-all").addEventListener("click", () => send({ op: "cancel_all" }, $("cancel-all")));
  window.addEventListener("resize", () => { if (current) drawChart(current); });
  setLive(false);
  connect();
});
