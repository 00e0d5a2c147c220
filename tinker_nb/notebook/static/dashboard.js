// tinker_nb live dashboard (anywidget front-end module). No CDN, no dependencies, no emoji.
function f32(dv) {
  if (!dv || !dv.byteLength) return new Float32Array(0);
  return new Float32Array(dv.buffer, dv.byteOffset, dv.byteLength / 4);
}
function fmt(x, d = 3) { return (x === null || x === undefined || Number.isNaN(x)) ? "–" : Number(x).toFixed(d); }
function dur(s) {
  if (s === null || s === undefined || !Number.isFinite(s) || s < 0) return "–";
  s = Math.round(s);
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = s % 60;
  const pad = (v) => String(v).padStart(2, "0");
  return h ? `${h}:${pad(m)}:${pad(sec)}` : `${m}:${pad(sec)}`;
}
const SVGNS = "http://www.w3.org/2000/svg";
const ICON_WARN = '<svg class="tnb-icon" viewBox="0 0 16 16" width="14" height="14" aria-hidden="true"><path d="M8 1.5 15 14H1z" fill="none" stroke="currentColor" stroke-width="1.5" stroke-linejoin="round"/><path d="M8 6v4M8 11.5v1.2" stroke="currentColor" stroke-width="1.5"/></svg>';
const ICON_STOP = '<svg class="tnb-icon" viewBox="0 0 16 16" width="14" height="14" aria-hidden="true"><circle cx="8" cy="8" r="6.5" fill="none" stroke="currentColor" stroke-width="1.5"/><path d="M4 8h8" stroke="currentColor" stroke-width="2"/></svg>';
const ICON_OK = '<svg class="tnb-icon" viewBox="0 0 16 16" width="12" height="12" aria-hidden="true"><path d="M3 8.5 6.5 12 13 4.5" fill="none" stroke="currentColor" stroke-width="2"/></svg>';

// Sparkline in a fixed viewBox scaled to the card's width: it can never overflow its card.
function spark(path, axis, xy) {
  const n = xy.length / 2;
  let x0 = Infinity, x1 = -Infinity, y0 = Infinity, y1 = -Infinity;
  for (let i = 0; i < n; i++) {
    const x = xy[2 * i], y = xy[2 * i + 1];
    if (!Number.isFinite(y)) continue;
    x0 = Math.min(x0, x); x1 = Math.max(x1, x); y0 = Math.min(y0, y); y1 = Math.max(y1, y);
  }
  if (!(x1 > x0)) { path.setAttribute("d", ""); axis.textContent = ""; return; }
  const ylo = y0, yhi = y1 > y0 ? y1 : y0 + 1;
  let d = "";
  for (let i = 0; i < n; i++) {
    const y = xy[2 * i + 1];
    if (!Number.isFinite(y)) continue;
    const px = 2 + 196 * (xy[2 * i] - x0) / (x1 - x0);
    const py = 52 - 48 * (y - ylo) / (yhi - ylo);
    d += (d ? "L" : "M") + px.toFixed(1) + "," + py.toFixed(1);
  }
  path.setAttribute("d", d);
  axis.innerHTML = `<span>step ${x0}</span><span>${ylo.toPrecision(3)}–${y1.toPrecision(3)}</span><span>step ${x1}</span>`;
}

function render({ model, el, signal }) {
  el.classList.add("tnb-dash");
  el.innerHTML = `
    <div class="tnb-head"><span class="tnb-title">tinker_nb</span><span class="tnb-status" data-k="status"></span></div>
    <div class="tnb-grid">
      <div class="tnb-card tnb-budget">
        <div class="tnb-label">privacy budget <span class="tnb-sym">ε</span></div>
        <div class="tnb-gauge"><div class="tnb-fill"></div></div>
        <div class="tnb-eps"><span class="tnb-big" data-k="epsilon"></span> / <span data-k="target"></span> <span class="tnb-small" data-k="pct"></span></div>
        <div class="tnb-small"><span data-k="eps_kind"></span> · <span data-k="accountant"></span> · δ=<span data-k="delta"></span></div>
        <div class="tnb-small">remaining <span data-k="remaining"></span></div>
        <div class="tnb-warn" data-k="warning"></div>
      </div>
      <div class="tnb-card">
        <div class="tnb-label">loss <span class="tnb-np">not private (diagnostic)</span></div>
        <svg class="tnb-spark" viewBox="0 0 200 54" preserveAspectRatio="none"><path fill="none" stroke="var(--tnb-loss)" stroke-width="1.5" vector-effect="non-scaling-stroke"/></svg>
        <div class="tnb-axis" data-k="axis"></div>
        <div class="tnb-small">last <span data-k="loss"></span></div>
      </div>
      <div class="tnb-card">
        <div class="tnb-label">progress</div>
        <div>step <b data-k="step"></b><span data-k="total"></span></div>
        <div class="tnb-bar"><div class="tnb-fill tnb-pfill"></div></div>
        <div class="tnb-small">elapsed <span data-k="elapsed"></span> · ETA <span data-k="eta"></span></div>
        <div class="tnb-small"><span data-k="sps"></span> steps/s · <span data-k="eps_s"></span> ex/s · <span data-k="tok_s"></span> tok/s</div>
        <div class="tnb-small">clipped <span data-k="clip"></span> <span class="tnb-np">(not private)</span> · checkpoints <span data-k="ckpts"></span></div>
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
    const eps = model.get("epsilon"), target = model.get("target_epsilon"), status = model.get("status");
    q("status").textContent = status;
    q("status").dataset.state = status;
    q("epsilon").textContent = fmt(eps);
    q("target").textContent = target ? String(target) : "∞ (no DP)";
    const frac = target ? Math.min(eps / target, 1) : 0;
    const pct = target ? Math.floor(1000 * eps / target) / 10 : null;
    q("pct").textContent = pct === null ? "" : `${pct.toFixed(1)}% spent`;
    q("eps_kind").textContent = model.get("epsilon_kind") || "";
    q("delta").textContent = model.get("delta") ? model.get("delta").toExponential(0) : "–";
    q("accountant").textContent = model.get("accountant") || "–";
    q("remaining").textContent = target ? fmt(Math.max(target - eps, 0)) : "–";
    const fill = el.querySelector(".tnb-gauge .tnb-fill");
    fill.style.width = `${(100 * frac).toFixed(1)}%`;
    const level = frac >= 1 || status === "refused" ? "out" : frac >= 0.8 ? "warn" : "ok";
    fill.dataset.level = level;
    const w = q("warning"), msg = model.get("warning");
    w.dataset.level = level;
    if (status === "refused" || msg) { w.innerHTML = `${status === "refused" ? ICON_STOP : ICON_WARN} `; w.append(msg); }
    else if (pct !== null && pct >= 80) { w.innerHTML = `${ICON_WARN} `; w.append(`${pct.toFixed(1)}% of the ε budget spent`); }
    else w.textContent = "";
    q("loss").textContent = fmt(model.get("loss"));
    const step = model.get("step"), total = model.get("total_steps");
    q("step").textContent = step;
    q("total").textContent = total ? ` / ${total}` : "";
    el.querySelector(".tnb-pfill").style.width = total ? `${Math.min(100, 100 * step / total).toFixed(1)}%` : "0%";
    el.querySelector(".tnb-bar").style.display = total ? "" : "none";
    q("elapsed").textContent = dur(model.get("elapsed_s"));
    q("eta").textContent = status === "training" ? dur(model.get("eta_s")) : "–";
    q("sps").textContent = fmt(model.get("steps_per_s"), 2);
    q("eps_s").textContent = fmt(model.get("examples_per_s"), 1);
    q("tok_s").textContent = fmt(model.get("tokens_per_s"), 0);
    const clip = model.get("clip_fraction");
    q("clip").textContent = clip === null || clip === undefined ? "–" : `${fmt(100 * clip, 0)}%`;
    q("ckpts").textContent = model.get("checkpoints");
    const a = model.get("audit") || {};
    q("entries").textContent = a.entries ?? "–";
    q("head").textContent = (a.head_hash || "").slice(0, 16);
    const v = q("verified");
    if (a.verified === undefined || a.verified === null) v.textContent = "not yet";
    else if (a.verified) v.innerHTML = `${ICON_OK} intact`;
    else v.textContent = "BROKEN";
    spark(el.querySelector(".tnb-spark path"), q("axis"), f32(model.get("loss_history")));
  };
  const schedule = () => { if (!raf) raf = requestAnimationFrame(draw); };
  model.on("change", schedule);
  signal?.addEventListener("abort", () => { model.off("change", schedule); if (raf) cancelAnimationFrame(raf); });
  draw();
}
export default { render };
