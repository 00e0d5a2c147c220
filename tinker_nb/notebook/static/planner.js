// tinker_nb budget planner front-end.
function f32(dv) { return dv && dv.byteLength ? new Float32Array(dv.buffer, dv.byteOffset, dv.byteLength / 4) : new Float32Array(0); }
const SLIDERS = [
  ["noise_multiplier", "noise multiplier σ", 0.3, 5, 0.05, "noise"],
  ["target_epsilon", "target ε", 0.5, 20, 0.5, "target"],
  ["batch_size", "batch size", 1, 1024, 1],
  ["dataset_size", "data set size N", 100, 200000, 100],
  ["epochs", "epochs", 0.5, 20, 0.5],
  ["log10_delta", "log10 δ", -9, -3, 0.5],
];
function render({ model, el, signal }) {
  el.classList.add("tnb-dash");
  const rows = SLIDERS.map(([k, label, lo, hi, st, mode]) =>
    `<label class="tnb-small" data-mode="${mode || ""}" style="display:block">${label}
      <input type="range" data-k="${k}" min="${lo}" max="${hi}" step="${st}" style="width:220px">
      <span data-v="${k}"></span></label>`).join("");
  el.innerHTML = `<div class="tnb-head"><span class="tnb-title">privacy budget planner</span>
    <select data-k="mode"><option value="noise">fix σ → ε</option><option value="target">fix ε → σ</option></select></div>
    <div class="tnb-grid"><div class="tnb-card">${rows}</div>
    <div class="tnb-card"><div class="tnb-label">result</div><div class="tnb-big" data-r="eps"></div>
    <div class="tnb-small" data-r="detail"></div><canvas width="260" height="90"></canvas>
    <pre class="mono tnb-small" data-r="cfg" style="white-space:pre-wrap"></pre><div class="tnb-warn" data-r="err"></div></div></div>`;
  el.querySelectorAll("input[data-k]").forEach((inp) => {
    inp.addEventListener("change", () => { model.set(inp.dataset.k, Number(inp.value)); model.save_changes(); });
  });
  const sel = el.querySelector("select");
  sel.addEventListener("change", () => { model.set("mode", sel.value); model.save_changes(); });
  const draw = () => {
    sel.value = model.get("mode");
    el.querySelectorAll("input[data-k]").forEach((inp) => { inp.value = model.get(inp.dataset.k); });
    el.querySelectorAll("[data-v]").forEach((s) => { s.textContent = model.get(s.dataset.v); });
    el.querySelectorAll("label[data-mode]").forEach((l) => { l.style.display = !l.dataset.mode || l.dataset.mode === model.get("mode") ? "block" : "none"; });
    const r = model.get("result") || {};
    el.querySelector('[data-r="eps"]').textContent = r.epsilon !== undefined ? `ε = ${r.epsilon.toFixed(3)}` : "";
    el.querySelector('[data-r="detail"]').textContent = r.steps ? `σ=${r.noise_multiplier.toFixed(3)}, q=${r.sample_rate.toFixed(4)}, ${r.steps} steps, RDP bound ${r.epsilon_rdp.toFixed(3)} (${r.accountant})` : "";
    el.querySelector('[data-r="cfg"]').textContent = r.dp_config || "";
    el.querySelector('[data-r="err"]').textContent = model.get("error");
    const c = el.querySelector("canvas"), ctx = c.getContext("2d"), xy = f32(model.get("curve"));
    ctx.clearRect(0, 0, c.width, c.height);
    const n = xy.length / 2; if (n < 2) return;
    const xm = xy[2 * (n - 1)], ym = Math.max(...Array.from({ length: n }, (_, i) => xy[2 * i + 1]));
    ctx.strokeStyle = "#2e86de"; ctx.lineWidth = 2; ctx.beginPath();
    for (let i = 0; i < n; i++) { const x = 4 + 252 * xy[2 * i] / xm, y = 86 - 82 * xy[2 * i + 1] / ym; i ? ctx.lineTo(x, y) : ctx.moveTo(x, y); }
    ctx.stroke();
  };
  model.on("change", draw);
  signal?.addEventListener("abort", () => model.off("change", draw));
  draw();
}
export default { render };
