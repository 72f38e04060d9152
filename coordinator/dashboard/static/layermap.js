// The layer map: layers 0..L as an axis, a row per replica chain, one bar per node,
// coverage gaps in red, and the routes of running requests drawn over the bars.
// Groups and lanes come from the server (view.py `layer_map`), so this file only draws.
import { el, fill, hue, range, svg } from "./format.js";

const LABEL_W = 86;
const PAD_R = 10;
const AXIS_H = 22;
const STRIP_H = 8;
const ROW_H = 32;
const ROW_GAP = 6;
const GROUP_GAP = 10;
const STATE_FILL = {
  ready: "var(--ready)",
  loading: "var(--loading)",
  joining: "var(--joining)",
  standby: "var(--standby)",
  leaving: "var(--leaving)",
  dead: "var(--dead)",
};

function tickStep(layers, width) {
  const fit = Math.max(1, Math.floor(width / 34));
  for (const step of [1, 2, 4, 5, 8, 10, 16, 20, 25, 50, 100]) {
    if (layers / step <= fit) return step;
  }
  return Math.ceil(layers / fit);
}

function groupLabel(group, replicaNo) {
  if (group.kind === "replica") return `Replica ${replicaNo}`;
  return { offline: "Offline", extra: "Extra", partial: "Partial" }[group.kind] || group.kind;
}

function drawBar(root, x, y, bar, offline, rowOf) {
  rowOf.set(bar.node_id, y);
  const [a, b] = bar.range;
  const w = Math.max(2, x(b) - x(a) - 3);
  const g = svg("g", { class: "bar", "data-node-id": bar.node_id, "data-state": bar.state, "data-start": a, "data-end": b });
  g.append(svg("title", {}, `${bar.name} ${range(bar.range)} ${bar.state}`));
  g.append(
    svg("rect", {
      x: x(a) + 1.5, y, width: w, height: ROW_H, rx: 5,
      fill: STATE_FILL[bar.state] || "var(--standby)",
      opacity: offline ? 0.35 : bar.serving ? 0.95 : 0.7,
      stroke: offline ? "var(--dead)" : "none", "stroke-dasharray": offline ? "4 3" : null,
    }),
  );
  const label = `${bar.name}  ${range(bar.range)}`;
  const text = w > label.length * 6.6 ? label : w > bar.name.length * 6.8 ? bar.name : "";
  if (text) g.append(svg("text", { x: x(a) + 9, y: y + ROW_H / 2 + 2 }, text));
  root.append(g);
}

function defs() {
  return svg(
    "defs",
    {},
    svg(
      "pattern",
      { id: "gap-hatch", width: 6, height: 6, patternUnits: "userSpaceOnUse", patternTransform: "rotate(45)" },
      svg("rect", { width: 6, height: 6, fill: "rgba(240,84,92,.10)" }),
      svg("line", { x1: 0, y1: 0, x2: 0, y2: 6, stroke: "var(--gap)", "stroke-width": 2.2 }),
    ),
  );
}

export function renderLayerMap(container, foot, map, active) {
  const width = Math.max(320, container.clientWidth || 800);
  const L = map.num_layers;
  const plotW = width - LABEL_W - PAD_R;
  const x = (layer) => LABEL_W + (plotW * layer) / L;
  const groups = map.groups;
  const lanes = groups.reduce((k, g) => k + g.lanes.length, 0);
  const top = AXIS_H + STRIP_H + 12;
  const height = top + Math.max(1, lanes) * (ROW_H + ROW_GAP) + Math.max(0, groups.length - 1) * GROUP_GAP;
  const root = svg("svg", { viewBox: `0 0 ${width} ${height}`, height, role: "img", "aria-label": "layer map" });
  root.append(defs());

  // Axis: layer boundaries, labelled every `step` layers.
  const axis = svg("g", { class: "axis" });
  const step = tickStep(L, plotW);
  for (let b = 0; b <= L; b += 1) {
    const labelled = b % step === 0 || b === L;
    axis.append(svg("line", { x1: x(b), x2: x(b), y1: AXIS_H - (labelled ? 6 : 3), y2: height, opacity: labelled ? 0.9 : 0.35 }));
    if (labelled && (b === L || L - b >= step / 2)) {
      axis.append(svg("text", { x: x(b), y: AXIS_H - 9, "text-anchor": "middle" }, String(b)));
    }
  }
  axis.append(svg("text", { x: 0, y: AXIS_H - 9 }, "layer"));
  root.append(axis);

  // Coverage strip: served layers green, uncovered red, assigned-but-loading amber.
  const stripY = AXIS_H;
  root.append(svg("text", { class: "row-label", x: 0, y: stripY + STRIP_H }, "coverage"));
  root.append(svg("rect", { x: x(0), y: stripY, width: plotW, height: STRIP_H, rx: 3, fill: "var(--ready)", opacity: 0.75 }));
  for (const [a, b] of map.serving_gaps) {
    root.append(svg("rect", { x: x(a), y: stripY, width: x(b) - x(a), height: STRIP_H, fill: "var(--loading)" }));
  }
  for (const [a, b] of map.gaps) {
    root.append(svg("rect", { class: "gap", "data-start": a, "data-end": b, x: x(a), y: stripY, width: x(b) - x(a), height: STRIP_H, fill: "var(--gap)" }));
  }

  // Groups (replicas) of lanes of bars; a thin rule separates groups.
  const rowOf = new Map();
  let replicaNo = 0;
  let lane = 0;
  groups.forEach((group, gi) => {
    if (group.kind === "replica") replicaNo += 1;
    const gy = top + lane * (ROW_H + ROW_GAP) + gi * GROUP_GAP;
    if (gi > 0) root.append(svg("line", { class: "group-rule", x1: 0, x2: width - PAD_R, y1: gy - (ROW_GAP + GROUP_GAP) / 2, y2: gy - (ROW_GAP + GROUP_GAP) / 2 }));
    root.append(svg("text", { class: "row-label", x: 0, y: gy + ROW_H / 2 + 4 }, groupLabel(group, replicaNo)));
    for (const bars of group.lanes) {
      const y = top + lane * (ROW_H + ROW_GAP) + gi * GROUP_GAP;
      lane += 1;
      for (const bar of bars) drawBar(root, x, y, bar, group.kind === "offline", rowOf);
    }
  });

  // Gaps: hatched red over every row, so a missing layer is impossible to miss.
  for (const [a, b] of map.gaps) {
    root.append(svg("rect", { x: x(a), y: top - 4, width: x(b) - x(a), height: height - top + 2, fill: "url(#gap-hatch)" }));
  }

  // Routes in use: a line through each hop's layers on its node's row.
  (active || []).slice(0, 16).forEach((req, k) => {
    const colour = hue(req.request_id);
    const pts = [];
    for (const hop of req.route) {
      const y = rowOf.get(hop.node_id);
      if (y === undefined) continue;
      const ly = y + ROW_H - 4 - (k % 3) * 2.5;
      pts.push([x(hop.range[0]) + 3, ly], [x(hop.range[1]) - 3, ly]);
    }
    if (pts.length < 2) return;
    const d = pts.map(([px, py], i) => `${i ? "L" : "M"}${px.toFixed(1)},${py.toFixed(1)}`).join(" ");
    root.append(svg("path", { d, fill: "none", stroke: "#0b0f14", "stroke-width": 4.5, opacity: 0.6, "stroke-linejoin": "round" }));
    root.append(svg("path", { class: "route", "data-request-id": req.request_id, d, fill: "none", stroke: colour, "stroke-width": 2.2, "stroke-linejoin": "round" }));
  });

  if (!groups.length) {
    root.append(svg("text", { class: "row-label", x: LABEL_W, y: top + ROW_H / 2 + 4 }, "No node holds layers yet — join one below."));
  }
  fill(container, [root]);

  const notes = [];
  if (map.gaps.length) {
    notes.push(el("span", { class: "bad" }, `Uncovered layers: ${map.gaps.map(range).join(", ")} — requests fail until nodes join. `));
  } else if (map.serving_gaps.length) {
    notes.push(el("span", {}, `Loading layers: ${map.serving_gaps.map(range).join(", ")}. `));
  }
  if (map.standby.length) notes.push(el("span", {}, `Standby: ${map.standby.join(", ")}.`));
  fill(foot, notes);
}
