// The nodes table: one row per node the coordinator knows, dead ones included.
import { age, bandwidth, bytes, count, el, fill, flops, range, rate } from "./format.js";

// Heartbeats come every second; a node this late is drawn amber before it is declared dead.
const LATE_S = 2.5;

function kvCell(status) {
  const total = status.kv_total_tokens;
  if (!total) return el("td", { class: "kv muted" }, "—");
  const free = status.kv_free_tokens;
  const pct = Math.round((100 * free) / total);
  return el(
    "td",
    { class: "kv", title: `${free} of ${total} tokens free` },
    `${count(free)} / ${count(total)}`,
    el("div", { class: "track" }, el("div", { class: "fill", style: `width:${pct}%` })),
  );
}

function deviceCell(hw) {
  const name = hw.device_name || hw.device;
  return el(
    "td",
    {},
    el("div", {}, name),
    el("div", { class: "dev-sub" }, `${flops(hw.flops)} · ${bandwidth(hw.mem_bandwidth)}`),
  );
}

// Memory offered, and how the node holds the model (the planner sizes it with this).
function memoryCell(hw) {
  const fmt = hw.format;
  const sub = fmt
    ? el("div", { class: "dev-sub", title: `${fmt.dtype} compute, ${fmt.weights} weights` },
        `${fmt.label} · ${bytes(fmt.layer_bytes)}/layer`)
    : null;
  return el("td", { class: "num" }, bytes(hw.memory_bytes), sub);
}

function layersCell(node) {
  const assigned = node.assignment.range;
  const loaded = node.loaded;
  const same = assigned && loaded && assigned[0] === loaded[0] && assigned[1] === loaded[1];
  const sub = assigned && !same && loaded ? el("div", { class: "dev-sub" }, `loaded ${range(loaded)}`) : null;
  const text = assigned ? range(assigned) : node.assignment.standby ? "standby" : "—";
  return el("td", { class: "mono" }, text, sub);
}

// A node spot checks found lying: it serves nothing; the reason says what it got wrong.
function statusCell(node) {
  if (!node.quarantined) {
    const badge = el("span", { class: "status", "data-state": node.state }, node.state);
    if (!node.slower_than_claimed) return el("td", {}, badge);
    const why = `runs ${node.slower_than_claimed}x slower than the hardware it claimed`;
    return el("td", {}, badge, el("div", { class: "dev-sub reason", title: why }, why));
  }
  return el(
    "td",
    {},
    el("span", { class: "status", "data-state": "quarantined", title: node.quarantined }, "quarantined"),
    el("div", { class: "dev-sub reason" }, node.quarantined),
  );
}

function row(node) {
  const st = node.status;
  const late = node.state !== "dead" && node.heartbeat_age_s > LATE_S;
  return el(
    "tr",
    { "data-node-id": node.node_id, "data-state": node.state },
    el("td", {}, el("div", { class: "name" }, node.name), el("div", { class: "addr" }, node.address)),
    deviceCell(node.hardware),
    memoryCell(node.hardware),
    layersCell(node),
    statusCell(node),
    el("td", { class: "num" }, String(st.running_requests)),
    kvCell(st),
    el("td", { class: "num" }, rate(st.tokens_per_s)),
    el("td", { class: `num${late ? " stale" : ""}` }, age(node.heartbeat_age_s)),
  );
}

export function renderNodes(tbody, summary, nodes) {
  if (!nodes.length) {
    fill(tbody, [el("tr", {}, el("td", { colspan: 9, class: "empty" }, "No nodes yet. Start one with the command under “Join a node”."))]);
  } else {
    fill(tbody, nodes.map(row));
  }
  const byState = {};
  for (const n of nodes) {
    const s = n.quarantined ? "quarantined" : n.state;
    byState[s] = (byState[s] || 0) + 1;
  }
  summary.textContent = Object.entries(byState)
    .map(([s, k]) => `${k} ${s}`)
    .join(" · ");
}
