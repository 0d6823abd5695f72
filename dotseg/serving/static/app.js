// dotseg dashboard: generate & predict, upload, dual-pane viewer, heatmap, metrics, history, downloads.
// Same-origin calls to the app that serves this page; every request has a timeout and the processing
// overlay is always hidden again (finally), so the page never spins forever.
"use strict";

(() => {
  const TIMEOUT_S = 120;
  const HISTORY_MAX = 30;
  const RING = 2 * Math.PI * 42; // circumference of the metric rings (r = 42 in index.html)

  const $ = (id) => document.getElementById(id);
  const state = { runs: [], current: null, seq: 0, controller: null };

  // -- requests ----------------------------------------------------------------------------------

  /** JSON from `path` (relative to the page); throws an Error whose message is fit to show. */
  async function api(path, options = {}) {
    const controller = new AbortController();
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      controller.abort();
    }, TIMEOUT_S * 1000);
    state.controller = controller;
    try {
      let response;
      try {
        response = await fetch(path, { ...options, signal: controller.signal });
      } catch (e) {
        if (timedOut) throw new Error(`no answer within ${TIMEOUT_S} s; the server may be overloaded, try again`);
        if (controller.signal.aborted) throw new Error("cancelled");
        throw new Error(`cannot reach the server (${e.message}); is dotseg serve still running?`);
      }
      const text = await response.text();
      let body = null;
      try {
        body = JSON.parse(text);
      } catch {
        body = null;
      }
      if (!response.ok) {
        const message = body && body.error ? body.error : text.slice(0, 300) || response.statusText;
        throw new Error(`HTTP ${response.status}: ${message}`);
      }
      if (body === null) throw new Error("the server's answer is not JSON");
      return body;
    } finally {
      clearTimeout(timer);
      if (state.controller === controller) state.controller = null;
    }
  }

  /** Run `task` with the processing overlay shown and the action buttons disabled. */
  async function busy(label, task) {
    const overlay = $("processing");
    const started = performance.now();
    $("processing-label").textContent = label;
    $("processing-time").textContent = "0 s";
    const tick = setInterval(() => {
      $("processing-time").textContent = `${Math.round((performance.now() - started) / 1000)} s`;
    }, 500);
    overlay.hidden = false;
    $("generate").disabled = true;
    $("upload").disabled = true;
    try {
      await task();
      hideError();
    } catch (e) {
      if (e.message !== "cancelled") showError(e.message);
    } finally {
      clearInterval(tick);
      overlay.hidden = true;
      $("generate").disabled = false;
      $("upload").disabled = false;
    }
  }

  function showError(message) {
    $("error-message").textContent = message;
    $("error-banner").hidden = false;
  }

  function hideError() {
    $("error-banner").hidden = true;
  }

  // -- numbers -----------------------------------------------------------------------------------

  const fmt = (v, digits = 3) => (v === null || v === undefined || !Number.isFinite(v) ? "—" : v.toFixed(digits));
  const ms = (v) => (Number.isFinite(v) ? `${v < 100 ? v.toFixed(1) : Math.round(v)} ms` : "—");
  const pct = (v) => (Number.isFinite(v) ? `${(100 * v).toFixed(1)} %` : "—");

  function setRing(id, value) {
    const ring = $(`${id}-ring`);
    const ok = Number.isFinite(value);
    ring.style.strokeDashoffset = String(RING * (1 - (ok ? Math.min(1, Math.max(0, value)) : 0)));
    ring.classList.remove("good", "fair", "bad", "empty");
    ring.classList.add(!ok ? "empty" : value >= 0.8 ? "good" : value >= 0.5 ? "fair" : "bad");
    $(id).textContent = fmt(ok ? value : null);
  }

  /** Foreground fraction and mean confidence from the mask and heatmap PNGs (the demo does not send
   * them): the heatmap's alpha is sqrt(p), so p = (alpha / 255)^2, good to about 1e-3. */
  async function pixelStats(result) {
    const [mask, prob] = await Promise.all([pixels(result.mask_png), pixels(result.prob_png)]);
    let fg = 0;
    let conf = 0;
    const n = mask.length / 4;
    for (let i = 0; i < mask.length; i += 4) {
      const p = (prob[i + 3] / 255) ** 2;
      if (mask[i] > 127) {
        fg += 1;
        conf += p;
      } else {
        conf += 1 - p;
      }
    }
    return { foreground: fg / n, confidence: conf / n };
  }

  async function pixels(b64) {
    const img = new Image();
    img.src = `data:image/png;base64,${b64}`;
    await img.decode();
    const canvas = document.createElement("canvas");
    canvas.width = img.naturalWidth;
    canvas.height = img.naturalHeight;
    const ctx = canvas.getContext("2d", { willReadFrequently: true });
    ctx.drawImage(img, 0, 0);
    return ctx.getImageData(0, 0, canvas.width, canvas.height).data;
  }

  // -- showing a run -----------------------------------------------------------------------------

  /** The download links point at blobs (data: URLs of large PNGs can be too long to download). */
  function setDownload(id, b64, filename) {
    const a = $(id);
    if (a.dataset.url) URL.revokeObjectURL(a.dataset.url);
    const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
    const url = URL.createObjectURL(new Blob([bytes], { type: "image/png" }));
    a.href = url;
    a.dataset.url = url;
    a.download = filename;
    a.classList.remove("disabled");
    a.removeAttribute("aria-disabled");
  }

  function setImage(id, b64) {
    const img = $(id);
    img.src = `data:image/png;base64,${b64}`;
    img.hidden = false;
  }

  function predView() {
    return document.querySelector('input[name="pred-view"]:checked').value;
  }

  function showPrediction() {
    const run = state.current;
    if (!run) return;
    const outline = predView() === "outline";
    setImage("pred-img", outline ? run.result.overlay_png : run.result.mask_png);
    $("pred-img").alt = outline ? "image with outlines" : "predicted mask";
    $("outline-legend").hidden = !outline;
  }

  function showHeatmap() {
    const on = $("heatmap-toggle").checked && state.current !== null;
    $("heatmap-img").hidden = !on;
    $("heatmap-img").style.opacity = $("heatmap-opacity").value;
  }

  function showModel(model) {
    if (!model) return;
    $("model-id").textContent = model.model_id || model.checkpoint || "—";
    $("model-id").title = [model.checkpoint, model.run_id].filter(Boolean).join(" · ");
    $("model-variant").textContent = model.variant ?? "—";
    $("model-engine").textContent = model.engine ?? "—";
    $("model-threshold").textContent = fmt(model.threshold, 2);
    const epoch = model.epoch !== undefined && model.epoch !== null ? ` · epoch ${model.epoch}` : "";
    $("model-status").textContent = `${model.model_id || model.checkpoint || "model"} · ${model.variant ?? "?"}${epoch} · ${model.engine ?? ""}`;
    $("status-dot").className = "status-dot ready";
  }

  function show(run) {
    state.current = run;
    const r = run.result;
    $("input-placeholder").hidden = true;
    $("pred-placeholder").hidden = true;
    setImage("input-img", r.image_png);
    setImage("heatmap-img", r.prob_png);
    showPrediction();
    showHeatmap();
    $("input-caption").textContent = `${run.title} · ${r.width ?? r.size}×${r.height ?? r.size}`;
    $("pred-caption").textContent = run.kind === "demo" ? "(outlines: truth vs prediction)" : "";

    setRing("dice", run.kind === "demo" ? r.dice : null);
    setRing("iou", run.kind === "demo" ? r.iou : null);
    setRing("confidence", run.stats.confidence);
    const snr = run.kind === "demo" ? r.snr_db : r.snr_db_estimate;
    $("snr-label").textContent = run.kind === "demo" ? "SNR" : "SNR (est.)";
    $("snr").textContent = snr === null || snr === undefined ? (run.kind === "demo" ? "clean (∞)" : "—") : `${snr.toFixed(1)} dB`;
    $("foreground").textContent = pct(run.stats.foreground);
    $("inference-ms").textContent = ms(r.timings?.inference_ms);
    $("total-ms").textContent = ms(run.clientMs);
    showModel(r.model);

    const ood = r.in_distribution;
    if (ood && !ood.ok) {
      $("ood-reason").textContent = ood.reason;
      $("ood-score").textContent = ood.score.toPrecision(2);
      $("ood-warning").hidden = false;
    } else {
      $("ood-warning").hidden = true;
    }
    setDownload("download-mask", r.mask_png, `${run.stem}-mask.png`);
    setDownload("download-overlay", r.overlay_png, `${run.stem}-overlay.png`);
    renderHistory();
  }

  // -- history -----------------------------------------------------------------------------------

  function remember(run) {
    state.runs.unshift(run);
    state.runs.length = Math.min(state.runs.length, HISTORY_MAX);
    show(run);
  }

  function renderHistory() {
    const list = $("history");
    list.replaceChildren(
      ...state.runs.map((run) => {
        const li = document.createElement("li");
        li.className = run === state.current ? "active" : "";
        li.dataset.run = String(run.id);
        const button = document.createElement("button");
        button.type = "button";
        const thumb = document.createElement("img");
        thumb.src = `data:image/png;base64,${run.result.overlay_png}`;
        thumb.alt = "";
        const text = document.createElement("span");
        text.className = "h-text";
        const title = document.createElement("span");
        title.className = "h-title";
        title.textContent = `#${run.id} ${run.title}`;
        const sub = document.createElement("span");
        sub.className = "h-sub";
        const r = run.result;
        if (run.kind === "demo") {
          sub.textContent = `Dice ${fmt(r.dice)} · IoU ${fmt(r.iou)} · ${ms(r.timings?.inference_ms)}`;
        } else {
          sub.textContent = `conf. ${fmt(r.mean_confidence)} · fg ${pct(r.foreground_fraction)}`;
          if (r.in_distribution && !r.in_distribution.ok) {
            const warn = document.createElement("span");
            warn.className = "h-warn";
            warn.textContent = " · ⚠ not a dot pattern?";
            sub.append(warn);
          }
        }
        text.append(title, sub);
        button.append(thumb, text);
        button.addEventListener("click", () => show(run));
        li.append(button);
        return li;
      }),
    );
    $("history-empty").hidden = state.runs.length > 0;
  }

  // -- actions -----------------------------------------------------------------------------------

  function demoParams() {
    const clamp = (id, lo, hi) => {
      const v = Number($(id).value);
      return Math.min(hi, Math.max(lo, Number.isFinite(v) ? v : lo));
    };
    return {
      num_dots: Math.round(clamp("num-dots", 5, 400)),
      jitter: clamp("jitter", 0, 0.2),
      noise: $("noise").value,
      level: clamp("level", 0, 1),
      placement: $("placement").value,
      seed: Math.round(clamp("seed", 0, 2147483647)),
      size: Math.round(clamp("size", 64, 1024)),
    };
  }

  async function generate() {
    const params = demoParams();
    const query = new URLSearchParams(Object.entries(params).map(([k, v]) => [k, String(v)]));
    await busy("Generating & predicting…", async () => {
      const t0 = performance.now();
      const result = await api(`demo?${query}`);
      const clientMs = performance.now() - t0;
      const stats = await pixelStats(result);
      const noise = params.noise === "none" ? "clean" : `${params.noise} ${params.level.toFixed(2)}`;
      remember({
        id: ++state.seq,
        kind: "demo",
        title: `demo · ${noise} · seed ${params.seed}`,
        stem: `dotseg-demo-seed${params.seed}-${params.noise}`,
        params,
        result,
        stats,
        clientMs,
      });
    });
  }

  async function upload(file) {
    if (!file) return;
    await busy(`Predicting ${file.name}…`, async () => {
      const form = new FormData();
      form.append("file", file, file.name);
      const t0 = performance.now();
      const result = await api("predict/json", { method: "POST", body: form });
      const clientMs = performance.now() - t0;
      remember({
        id: ++state.seq,
        kind: "upload",
        title: file.name,
        stem: `${file.name.replace(/\.[^.]*$/, "") || "upload"}`,
        result,
        stats: { foreground: result.foreground_fraction, confidence: result.mean_confidence },
        clientMs,
      });
    });
  }

  async function pollReady() {
    try {
      const body = await api("ready");
      showModel(body.model);
      if (body.rollout_error) showError(body.rollout_error);
    } catch (e) {
      $("model-status").textContent = `not ready: ${e.message}`;
      $("status-dot").className = "status-dot down";
      setTimeout(pollReady, 3000);
    }
  }

  // -- wiring ------------------------------------------------------------------------------------

  function bindOutput(inputId, digits) {
    const update = () => {
      $(`${inputId}-out`).textContent = Number($(inputId).value).toFixed(digits);
    };
    $(inputId).addEventListener("input", update);
    update();
  }

  function init() {
    bindOutput("num-dots", 0);
    bindOutput("jitter", 3);
    bindOutput("level", 2);
    $("demo-form").addEventListener("submit", (e) => {
      e.preventDefault();
      generate();
    });
    $("seed-random").addEventListener("click", () => {
      $("seed").value = String(Math.floor(Math.random() * 1_000_000));
    });
    $("upload").addEventListener("change", (e) => {
      const file = e.target.files[0];
      e.target.value = ""; // the same file can be chosen again
      upload(file);
    });
    const zone = $("dropzone");
    for (const type of ["dragenter", "dragover"]) {
      zone.addEventListener(type, (e) => {
        e.preventDefault();
        zone.classList.add("over");
      });
    }
    for (const type of ["dragleave", "drop"]) zone.addEventListener(type, () => zone.classList.remove("over"));
    zone.addEventListener("drop", (e) => {
      e.preventDefault();
      upload(e.dataTransfer.files[0]);
    });
    // A file dropped next to the zone must not make the browser navigate away from the page.
    window.addEventListener("dragover", (e) => e.preventDefault());
    window.addEventListener("drop", (e) => e.preventDefault());

    $("heatmap-toggle").addEventListener("change", showHeatmap);
    $("heatmap-opacity").addEventListener("input", showHeatmap);
    for (const radio of document.querySelectorAll('input[name="pred-view"]')) radio.addEventListener("change", showPrediction);
    $("cancel").addEventListener("click", () => state.controller?.abort());
    $("error-close").addEventListener("click", hideError);
    $("history-clear").addEventListener("click", () => {
      state.runs = state.current ? [state.current] : [];
      renderHistory();
    });
    renderHistory();
    pollReady();
  }

  init();
})();
