// tinker_nb budget planner front-end: live while dragging, approximate at once, exact from the kernel's background thread.
function f32(dv) { return dv && dv.byteLength ? new Float32Array(dv.buffer, dv.byteOffset, dv.byteLength / 4) : new Float32Array(0); }
const SLIDERS = [
  // key, label, min, max, step, mode (shown only in that mode), unit
  ["noise_multiplier", "noise multiplier σ", 0.3, 5, 0.01, "noise", ""],
  ["target_epsilon", "target ε", 0.1, 20, 0.1, "target", ""],
  ["epochs", "epochs", 0.5, 20, 0.5, "", "passes"],
  ["log10_delta", "δ (log10)", -10, -3, 0.5, "", ""],
  ["max_grad_norm", "clip norm C", 0.1, 5, 0.1, "", ""],
];
const NUMBERS = [["dataset_size", "data set size N", "records"], ["batch_size", "expected batch size", "per step"]];
const SVGNS = "http://www.w3.org/2000/svg";

function niceTicks(hi, n = 4) {
  if (!(hi > 0)) return [0];
  const raw = hi / n, mag = Math.pow(10, Math.floor(Math.log10(raw)));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw);
  const out = [];
  for (let v = 0; v <= hi + 1e-9; v += step) out.push(+v.toPrecision(6));
  return out;
}

function chart(svg, xy, target, delta) {
  const W = 320, H = 170, L = 40, R = 10, T = 8, B = 34, w = W - L - R, h = H - T - B;
  const n = xy.length / 2;
  svg.innerHTML = "";
  if (n < 1) return;
  let xHi = 0, yHi = target || 0;
  for (let i = 0; i < n; i++) { xHi = Math.max(xHi, xy[2 * i]); yHi = Math.max(yHi, xy[2 * i + 1]); }
  yHi = yHi * 1.08 || 1;
  const X = (t) => L + w * t / xHi, Y = (e) => T + h * (1 - e / yHi);
  let s = "";
  for (const v of niceTicks(yHi)) s += `<line class="tnb-gridline" x1="${L}" x2="${L + w}" y1="${Y(v)}" y2="${Y(v)}"/><text x="${L - 4}" y="${Y(v) + 3}" text-anchor="end">${v}</text>`;
  for (const v of niceTicks(xHi)) s += `<line x1="${X(v)}" x2="${X(v)}" y1="${T + h}" y2="${T + h + 3}" stroke="currentColor"/><text x="${X(v)}" y="${T + h + 13}" text-anchor="middle">${v}</text>`;
  s += `<line x1="${L}" x2="${L + w}" y1="${T + h}" y2="${T + h}" stroke="currentColor"/><line x1="${L}" x2="${L}" y1="${T}" y2="${T + h}" stroke="currentColor"/>`;
  if (target) s += `<line x1="${L}" x2="${L + w}" y1="${Y(target)}" y2="${Y(target)}" stroke="#d9534f" stroke-dasharray="4 3"/><text x="${L + w}" y="${Y(target) - 3}" text-anchor="end" style="fill:#d9534f">target ε ${target}</text>`;
  let pts = `${X(0)},${Y(0)}`;
  for (let i = 0; i < n; i++) pts += ` ${X(xy[2 * i]).toFixed(1)},${Y(xy[2 * i + 1]).toFixed(1)}`;
  s += `<polyline fill="none" stroke="#3b82c4" stroke-width="2" points="${pts}"/>`;
  s += `<text x="${L + w / 2}" y="${H - 4}" text-anchor="middle">optimizer steps (Poisson draws)</text>`;
  s += `<text x="10" y="${T + h / 2}" text-anchor="middle" transform="rotate(-90 10 ${T + h / 2})">ε at δ=${delta}</text>`;
  svg.innerHTML = s;
}

function render({ model, el, signal }) {
  el.classList.add("tnb-dash", "tnb-planner");
  const sliders = SLIDERS.map(([k, label, lo, hi, st, mode, unit]) =>
    `<label class="tnb-row tnb-small" data-mode="${mode}"><span>${label}</span>
      <input type="range" data-k="${k}" min="${lo}" max="${hi}" step="${st}"><output data-v="${k}"></output></label>`).join("");
  const numbers = NUMBERS.map(([k, label, unit]) =>
    `<label class="tnb-row tnb-small"><span>${label}</span><span class="tnb-small">${unit}</span>
      <input type="number" data-n="${k}" min="1" step="1"></label>`).join("");
  el.innerHTML = `<div class="tnb-head"><span class="tnb-title">privacy budget planner</span>
    <select data-k="mode"><option value="noise">fix σ, get ε</option><option value="target">fix ε, get σ</option></select></div>
    <div class="tnb-grid"><div class="tnb-card">${numbers}${sliders}</div>
    <div class="tnb-card"><div class="tnb-label">result <span class="tnb-busy" data-r="busy"></span></div>
    <div class="tnb-big" data-r="eps"></div>
    <div class="tnb-small" data-r="detail"></div>
    <svg class="tnb-chart" viewBox="0 0 320 170" role="img" aria-label="epsilon versus steps"></svg>
    <div class="tnb-cfg" data-r="cfg"></div>
    <div class="tnb-error" data-r="err"></div></div></div>`;
  const pending = {};
  let raf = 0;
  const push = () => {
    raf = 0;
    for (const [k, v] of Object.entries(pending)) model.set(k, v);
    for (const k of Object.keys(pending)) delete pending[k];
    model.save_changes();
  };
  const queue = (k, v) => { pending[k] = v; if (!raf) raf = requestAnimationFrame(push); };
  el.querySelectorAll("input[data-k]").forEach((inp) => {
    const out = el.querySelector(`[data-v="${inp.dataset.k}"]`);
    inp.addEventListener("input", () => {  // live while dragging, coalesced to one message per frame
      out.textContent = label(inp.dataset.k, Number(inp.value));
      el.querySelector('[data-r="busy"]').textContent = "computing…";
      queue(inp.dataset.k, Number(inp.value));
    });
  });
  el.querySelectorAll("input[data-n]").forEach((inp) => {
    inp.addEventListener("change", () => {
      const v = Math.round(Number(inp.value));
      if (Number.isFinite(v) && v >= 1) queue(inp.dataset.n, v);
    });
  });
  const sel = el.querySelector("select");
  sel.addEventListener("change", () => queue("mode", sel.value));
  const label = (k, v) => k === "log10_delta" ? `${Math.pow(10, v).toExponential(0)}` : k === "epochs" ? `${v}` : `${v}`;
  const draw = () => {
    sel.value = model.get("mode");
    el.querySelectorAll("input[data-k]").forEach((inp) => {
      if (document.activeElement !== inp) inp.value = model.get(inp.dataset.k);
      el.querySelector(`[data-v="${inp.dataset.k}"]`).textContent = label(inp.dataset.k, model.get(inp.dataset.k));
    });
    el.querySelectorAll("input[data-n]").forEach((inp) => { if (document.activeElement !== inp) inp.value = model.get(inp.dataset.n); });
    el.querySelectorAll("label[data-mode]").forEach((l) => { l.style.display = !l.dataset.mode || l.dataset.mode === model.get("mode") ? "" : "none"; });
    const r = model.get("result") || {}, err = model.get("error");
    const exact = !!r.exact;
    el.querySelector('[data-r="busy"]').textContent = model.get("busy") ? "refining (exact PLD)…" : (r.steps ? `exact, ${(1000 * (r.seconds || 0)).toFixed(0)} ms` : "");
    el.querySelector('[data-r="err"]').textContent = err;
    if (err || !r.steps) {
      el.querySelector('[data-r="eps"]').textContent = "–";
      el.querySelector('[data-r="detail"]').textContent = "";
      el.querySelector('[data-r="cfg"]').textContent = "";
      el.querySelector(".tnb-chart").innerHTML = "";
      return;
    }
    const approx = exact ? "" : "≈ ";
    el.querySelector('[data-r="eps"]').textContent = model.get("mode") === "noise"
      ? `ε ${approx}${r.epsilon.toFixed(3)}` : `σ ${approx}${r.noise_multiplier.toFixed(4)}  (ε ${approx}${r.epsilon.toFixed(3)})`;
    el.querySelector('[data-r="detail"]').textContent =
      `q = ${r.sample_rate.toPrecision(3)} · ${r.steps.toLocaleString()} steps · δ = ${r.delta} · ${String(r.accountant).toUpperCase()}` +
      (r.epsilon_rdp ? ` · RDP bound ${r.epsilon_rdp.toFixed(3)}` : "");
    el.querySelector('[data-r="cfg"]').textContent = exact ? r.dp_config : "(exact DPConfig follows…)";
    chart(el.querySelector(".tnb-chart"), f32(model.get("curve")), r.target_epsilon, r.delta);
  };
  model.on("change", draw);
  signal?.addEventListener("abort", () => { model.off("change", draw); if (raf) cancelAnimationFrame(raf); });
  draw();
}
export default { render };
