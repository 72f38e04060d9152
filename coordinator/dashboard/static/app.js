// Entry point: follow /cluster/events and redraw every panel on each snapshot.
// EventSource reconnects by itself after a coordinator restart; the header says
// "disconnected" meanwhile, and a watchdog notices a stream that went silent.
import { renderChart } from "./chart.js";
import { Chat } from "./chat.js";
import { keyHeaders, withKey } from "./key.js";
import { renderLayerMap } from "./layermap.js";
import { renderNodes } from "./nodes.js";
import { renderActive, renderHeader, renderJoin, renderKpis, renderScheduler } from "./panels.js";

const $ = (id) => document.getElementById(id);
const SILENT_S = 4; // snapshots come every second: this long without one is a lost link
const RETRY_MS = 1500;

let last = null;
let chat = null;
let source = null;
let lastMessageAt = 0;

function setConnection(state, text) {
  const pill = $("conn");
  pill.dataset.state = state;
  pill.textContent = text;
}

function render(view) {
  last = view;
  renderHeader(view);
  renderKpis(view.traffic);
  renderLayerMap($("layer-map"), $("map-foot"), view.layer_map, view.traffic.active);
  renderChart($("chart"), view.traffic.series);
  renderNodes(document.querySelector("#nodes-table tbody"), $("nodes-summary"), view.nodes);
  renderActive(view.traffic, view.nodes);
  renderScheduler(view);
  renderJoin(view.cluster);
  if (chat === null) chat = new Chat(view.cluster.model);
  else chat.model = view.cluster.model;
}

function connect() {
  source?.close();
  source = new EventSource(withKey("/cluster/events"));
  source.onopen = () => setConnection("live", "live");
  source.onmessage = (e) => {
    lastMessageAt = Date.now();
    setConnection("live", "live");
    render(JSON.parse(e.data));
  };
  source.onerror = () => {
    setConnection("disconnected", "disconnected — retrying");
    // CONNECTING: the browser retries by itself. CLOSED (an HTTP error): start over,
    // unless the error is a missing or wrong key: then say how to open the page.
    if (source.readyState === EventSource.CLOSED) retryOrAskForKey();
  };
}

async function retryOrAskForKey() {
  const resp = await fetch("/cluster/info", { headers: keyHeaders() }).catch(() => null);
  if (resp?.status === 401) {
    setConnection("disconnected", "needs a key — open this page as /?key=YOUR_KEY");
    return;
  }
  setTimeout(connect, RETRY_MS);
}

setInterval(() => {
  if (lastMessageAt && Date.now() - lastMessageAt > SILENT_S * 1000 && $("conn").dataset.state === "live") {
    setConnection("disconnected", "disconnected — retrying");
    connect();
  }
}, 1000);

// The map and chart are sized to their boxes: redraw on resize with the last data.
window.addEventListener("resize", () => {
  if (!last) return;
  renderLayerMap($("layer-map"), $("map-foot"), last.layer_map, last.traffic.active);
  renderChart($("chart"), last.traffic.series);
});

connect();
