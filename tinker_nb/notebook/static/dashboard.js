// tinker_nb live dashboard (anywidget front-end module). No CDN, no dependencies.
function f32(dv) {
  if (!dv || !dv.byteLength) return new Float32Array(0);
  return new Float32Array(dv.buffer, dv.byteOffset, dv.byteLength / 4);
}
function fmt(x, d = 3) { return (x === null || x === undefined || Number.isNaN(x)) ? "–" : Number(x).toFixed(d); }

function spark(canvas, xy, color) {
  const ctx = canvas.getContext("2d");
  const w = canvas.width, h = canvas.height;
  ctx.clearRect(0, 0, w, h);
  const n = xy.length / 2;
  if (n < 2) return;
  let x0 = Infinity, x1 = -Infinity, y0 = Infinity, y1 = -Infinity;
  for (let i = 0; i < n; i++) {
    const x = xy[2 * i], y = xy[2 * i + 1];
    if (!Number.isFinite(y)) continue;
    x0 = Math.min(x0, x); x1 = Math.max(x1, x); y0 = Math.min(y0, y); y1 = Math.max(y1, y);
  }
  if (!(x1 > x0)) return;
  if (!(y1 > y0)) { y1 = y0 + 1; }
  ctx.strokeStyle = color; ctx.lineWidth = 2; ctx.beginPath();
  let first = true;
  for (let i = 0; i < n; i++) {
    const y = xy[2 * i + 1];
    if (!Number.isFinite(y)) continue;
    const px = 4 + (w - 8) * (xy[2 * i] - x0) / (x1 - x0);
    const py = h - 4 - (h - 8) * (y - y0) / (y1 - y0);
    if (first) { ctx.moveTo(px, py); first = false; } else { ctx.lineTo(px, py); }
  }
  ctx.stroke();
}

function render({ model, el, signal }) {
  el.classList.add("tnb-dash");
  el.innerHTML = `
    <div class="tnb-head"><span class="tnb-title">tinker_nb</span><span class="tnb-status" data-k="status"></span></div>
    <div class="tnb-grid">
      <div class="tnb-card tnb-budget">
        <div class="tnb-label">privacy budget <span class="tnb-sym">ε</span></div>
        <div class="tnb-gauge"><div class="tnb-fill"></div></div>
        <div class="tnb-eps"><span class="tnb-big" data-k="epsilon"></span> / <span data-k="target"></span></div>
        <div class="tnb-small">δ=<span data-k="delta"></span> · <span data-k="accountant"></span> · remaining <span data-k="remaining"></span></div>
        <div class="tnb-warn" data-k="warning"></div>
      </div>
      <div class="tnb-card">
        <div class="tnb-label">loss <span class="tnb-np">not private (diagnostic)</span></div>
        <canvas class="tnb-loss" width="260" height="70"></canvas>
        <div class="tnb-small">last <span data-k="loss"></span></div>
      </div>
      <div class="tnb-card">
        <div class="tnb-label">progress</div>
        <div>step <b data-k="step"></b></div>
        <div class="tnb-small"><span data-k="eps_s"></span> ex/s · <span data-k="tok_s"></span> tok/s</div>
        <div class="tnb-small">clipped <span data-k="clip"></span> <span class="tnb-np">(not private)</span></div>
        <div class="tnb-small">checkpoints <span data-k="ckpts"></span></div>
      </div>
      <div class="tnb-card">
        <div class="tnb-label">audit ledger</div>
        <div class="tnb-small">entries <b data-k="entries"></b></div>
        <div class="tnb-small mono">head <span data-k="head"></span></div>
        <div class="tnb-small">verified <span data-k="verified"></span></div>
      </div>
    </div>`;
  const q = (k) => el.querySelector(`[data-k="${k}"]`);
  let raf = 0;
  const draw = () => {
    raf = 0;
    const eps = model.get("epsilon"), target = model.get("target_epsilon");
    q("status").textContent = model.get("status");
    q("status").dataset.state = model.get("status");
    q("epsilon").textContent = fmt(eps);
    q("target").textContent = target ? fmt(target, 2) : "∞ (no DP)";
    q("delta").textContent = model.get("delta") ? model.get("delta").toExponential(0) : "–";
    q("accountant").textContent = model.get("accountant") || "–";
    q("remaining").textContent = target ? fmt(Math.max(target - eps, 0)) : "–";
    const frac = target ? Math.min(eps / target, 1) : 0;
    const fill = el.querySelector(".tnb-fill");
    fill.style.width = `${(100 * frac).toFixed(1)}%`;
    fill.dataset.level = frac >= 1 ? "out" : frac >= 0.8 ? "warn" : "ok";
    q("warning").textContent = model.get("warning");
    q("loss").textContent = fmt(model.get("loss"));
    q("step").textContent = model.get("step");
    q("eps_s").textContent = fmt(model.get("examples_per_s"), 1);
    q("tok_s").textContent = fmt(model.get("tokens_per_s"), 0);
    q("clip").textContent = `${fmt(100 * model.get("clip_fraction"), 0)}%`;
    q("ckpts").textContent = model.get("checkpoints");
    const a = model.get("audit") || {};
    q("entries").textContent = a.entries ?? "–";
    q("head").textContent = (a.head_hash || "").slice(0, 16);
    q("verified").textContent = a.verified === undefined || a.verified === null ? "not yet" : (a.verified ? "✓ intact" : "✗ BROKEN");
    spark(el.querySelector(".tnb-loss"), f32(model.get("loss_history")), "#e67e22");
  };
  const schedule = () => { if (!raf) raf = requestAnimationFrame(draw); };
  model.on("change", schedule);
  signal?.addEventListener("abort", () => model.off("change", schedule));
  draw();
}
export default { render };
