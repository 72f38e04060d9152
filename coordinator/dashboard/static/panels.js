// The small panels: KPI strip, header pills, active requests, scheduler, join box.
import { age, clock, count, el, fill, hue, latency, rate } from "./format.js";

const $ = (id) => document.getElementById(id);
const MAX_DECISIONS = 8;

export function renderHeader(view) {
  $("model-name").textContent = `${view.model.name} · ${view.model.num_layers} layers`;
  const pill = $("coverage-pill");
  const cov = view.coverage;
  if (cov.serving) {
    pill.dataset.state = "ok";
    pill.textContent = "all layers served";
  } else {
    pill.dataset.state = cov.gaps.length ? "gap" : "loading";
    const gaps = cov.gaps.length ? cov.gaps : cov.serving_gaps;
    const missing = gaps.reduce((k, [a, b]) => k + b - a, 0);
    pill.textContent = `${missing} layer${missing === 1 ? "" : "s"} ${cov.gaps.length ? "uncovered" : "loading"}`;
  }
  const alive = view.nodes.filter((n) => n.state !== "dead").length;
  $("nodes-pill").textContent = `${alive} node${alive === 1 ? "" : "s"} online`;
}

function pair(p) {
  return p.p50 === null ? ["—", "no samples yet"] : [latency(p.p50), `p50 · p99 ${latency(p.p99)}`];
}

export function renderKpis(traffic) {
  $("kpi-rps").textContent = rate(traffic.requests_per_s);
  $("kpi-tps").textContent = rate(traffic.tokens_per_s);
  const [ttft, ttftSub] = pair(traffic.ttft_s);
  $("kpi-ttft").textContent = ttft;
  $("kpi-ttft-sub").textContent = ttftSub;
  const [itl, itlSub] = pair(traffic.inter_token_s);
  $("kpi-itl").textContent = itl;
  $("kpi-itl-sub").textContent = itlSub;
  $("kpi-active").textContent = String(traffic.active.length);
  const e = traffic.ended;
  $("kpi-done").textContent = `${count(e.finished)} done · ${count(e.cancelled)} cancelled · ${count(e.failed)} failed`;
  const q = traffic.queue || { waiting: 0, rejected: 0 };
  $("kpi-queued").textContent = String(q.waiting);
  $("kpi-rejected").textContent = `${count(q.rejected)} refused (429)`;
}

export function renderActive(traffic, nodes) {
  const names = new Map(nodes.map((n) => [n.node_id, n.name]));
  const list = traffic.active.map((r) =>
    el(
      "li",
      { "data-request-id": r.request_id },
      el(
        "div",
        {},
        el("span", { class: "dot", style: `background:${hue(r.request_id)}` }),
        el("span", { class: "mono" }, r.request_id.slice(-8)),
        el("div", { class: "chain" }, r.route.map((h) => names.get(h.node_id) || h.node_id).join(" → ") || "routing…"),
      ),
      el("div", { class: "muted" }, `${r.tokens} tok · ${age(r.age_s)}`),
    ),
  );
  fill($("active-list"), list.length ? list : [el("li", { class: "empty" }, "Idle. Requests in flight appear here with their chain.")]);
  $("active-count").textContent = list.length ? String(list.length) : "";
}

export function renderScheduler(view) {
  const alloc = view.allocation;
  $("solver").textContent = alloc.solver ? `solver: ${alloc.solver}` : "";
  const figures = [];
  if (alloc.throughput_tok_s) figures.push(`≈ ${rate(alloc.throughput_tok_s)} tok/s`);
  if (alloc.latency_ms_per_token) figures.push(`${latency(alloc.latency_ms_per_token / 1000)} / token`);
  fill($("alloc-reason"), [
    el("div", {}, alloc.reason || "—"),
    figures.length ? el("div", { class: "muted", style: "margin-top:4px" }, `estimate: ${figures.join(" · ")}`) : null,
  ]);
  const items = view.decisions.slice(0, MAX_DECISIONS).map((d) =>
    el(
      "li",
      {},
      el("div", { class: "when" }, el("span", { class: "kind", "data-kind": d.kind }, d.kind), clock(d.time)),
      el("div", { class: "msg" }, d.message),
    ),
  );
  fill($("decisions"), items);
}

let joinWired = false;

export function renderJoin(cluster) {
  $("join-cmd").textContent = cluster.join_command;
  if (joinWired) return;
  joinWired = true;
  $("join-copy").addEventListener("click", async () => {
    const text = $("join-cmd").textContent;
    try {
      await navigator.clipboard.writeText(text);
    } catch {
      // Clipboard needs a secure context; select the text so Ctrl-C works instead.
      const sel = window.getSelection();
      sel.selectAllChildren($("join-cmd"));
    }
    $("join-copy").textContent = "Copied";
    setTimeout(() => ($("join-copy").textContent = "Copy"), 1200);
  });
}
