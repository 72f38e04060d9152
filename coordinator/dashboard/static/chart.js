// Throughput chart on a canvas: tokens/s as a filled area (left axis) and
// requests/s as a line (right axis), one point per second over the window.

const SMOOTH_S = 5; // a moving average: one-second buckets are too spiky to read

function smooth(values) {
  const out = new Array(values.length);
  let sum = 0;
  for (let i = 0; i < values.length; i += 1) {
    sum += values[i];
    if (i >= SMOOTH_S) sum -= values[i - SMOOTH_S];
    out[i] = sum / Math.min(i + 1, SMOOTH_S);
  }
  return out;
}

// The axis top: four gridline steps of a round size (1, 1.5, 2, 2.5, 3, 4, 5, 6, 8 x 10^k).
function niceMax(v) {
  if (v <= 0) return 1;
  const step = v / 4;
  const p = 10 ** Math.floor(Math.log10(step));
  for (const m of [1, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10]) if (m * p >= step) return 4 * m * p;
  return 40 * p;
}

function css(name) {
  return getComputedStyle(document.documentElement).getPropertyValue(name).trim();
}

export function renderChart(canvas, series) {
  const dpr = window.devicePixelRatio || 1;
  const w = canvas.clientWidth;
  const h = canvas.clientHeight;
  if (!w || !h) return;
  if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(h * dpr)) {
    canvas.width = Math.round(w * dpr);
    canvas.height = Math.round(h * dpr);
  }
  const ctx = canvas.getContext("2d");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, w, h);

  const tokens = smooth(series.tokens);
  const requests = smooth(series.requests);
  const n = tokens.length;
  const left = 44;
  const right = 40;
  const top = 8;
  const bottom = 20;
  const pw = w - left - right;
  const ph = h - top - bottom;
  const tMax = niceMax(Math.max(...tokens, 0));
  const rMax = niceMax(Math.max(...requests, 0));
  const x = (i) => left + (pw * i) / Math.max(1, n - 1);
  const yT = (v) => top + ph - (ph * v) / tMax;
  const yR = (v) => top + ph - (ph * v) / rMax;

  const muted = css("--muted");
  const line = css("--line");
  ctx.font = "11px system-ui, sans-serif";
  ctx.lineWidth = 1;
  // Grid and both axes' labels.
  for (let g = 0; g <= 4; g += 1) {
    const gy = top + (ph * g) / 4;
    ctx.strokeStyle = line;
    ctx.beginPath();
    ctx.moveTo(left, Math.round(gy) + 0.5);
    ctx.lineTo(left + pw, Math.round(gy) + 0.5);
    ctx.stroke();
    ctx.fillStyle = muted;
    ctx.textAlign = "right";
    ctx.fillText(fmt(tMax * (1 - g / 4)), left - 6, gy + 4);
    ctx.textAlign = "left";
    ctx.fillText(fmt(rMax * (1 - g / 4)), left + pw + 6, gy + 4);
  }
  ctx.textAlign = "center";
  for (const back of [300, 240, 180, 120, 60, 0]) {
    if (back >= n) continue;
    ctx.fillText(back ? `-${back / 60} min` : "now", x(n - 1 - back), h - 5);
  }

  // Tokens/s: area plus edge.
  const tokensColour = css("--tokens");
  ctx.beginPath();
  ctx.moveTo(x(0), yT(0));
  tokens.forEach((v, i) => ctx.lineTo(x(i), yT(v)));
  ctx.lineTo(x(n - 1), yT(0));
  ctx.closePath();
  const grad = ctx.createLinearGradient(0, top, 0, top + ph);
  grad.addColorStop(0, "rgba(76,154,255,.35)");
  grad.addColorStop(1, "rgba(76,154,255,.02)");
  ctx.fillStyle = grad;
  ctx.fill();
  stroke(ctx, tokens.map((v, i) => [x(i), yT(v)]), tokensColour, 1.6);
  // Requests/s: a line on the right axis.
  stroke(ctx, requests.map((v, i) => [x(i), yR(v)]), css("--requests"), 1.6);
}

function stroke(ctx, pts, colour, width) {
  ctx.beginPath();
  pts.forEach(([px, py], i) => (i ? ctx.lineTo(px, py) : ctx.moveTo(px, py)));
  ctx.strokeStyle = colour;
  ctx.lineWidth = width;
  ctx.lineJoin = "round";
  ctx.stroke();
}

function fmt(v) {
  if (v >= 1000) return `${(v / 1000).toFixed(v >= 10000 ? 0 : 1)}k`;
  if (v >= 10 || v === 0) return v.toFixed(0);
  return v.toFixed(v >= 1 ? 1 : 2);
}
