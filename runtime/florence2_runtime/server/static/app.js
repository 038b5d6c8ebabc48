// The try-it page: pick an image and a task, run it through POST v1/infer, draw the answer on the image.
// With "Scores" the answer carries each object's confidence: shown after its label on the image and in the
// object list; the "Min score" slider hides the objects scored below it (here only, no new request).
// No dependencies and nothing from the network but this server. Shapes are SVG in the image's own pixel
// coordinates (viewBox = the image's natural size), so they line up at any display size.
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  const SVG = "http://www.w3.org/2000/svg";
  const PALETTE = ["#e6194b", "#3cb44b", "#ffe119", "#0082c8", "#f58230", "#911eb4", "#46f0f0", "#f032e6",
    "#d2f53c", "#fabebe", "#008080", "#e6beff", "#aa6e28", "#fffac8", "#800000", "#aaffc3", "#808000", "#000080"];
  const KEY_STORE = "florence2-api-key";
  let config = null;
  let imageDataUrl = null;
  let imageSize = null; // [width, height] in image pixels
  let region = null; // [x1, y1, x2, y2] in image pixels
  let dragStart = null;
  let answerObjects = []; // the last answer's objects (objectsOf), for the score threshold
  let answerSummary = "";

  function colour(label) { // stable per label (FNV-1a)
    let h = 0x811c9dc5;
    for (const ch of label || "") { h ^= ch.codePointAt(0); h = Math.imul(h, 0x01000193) >>> 0; }
    return PALETTE[h % PALETTE.length];
  }

  function status(message, error = false) {
    $("status").textContent = message;
    $("status").classList.toggle("error", error);
  }

  function spec() { return config.tasks.find((t) => t.task === $("task").value); }

  async function loadConfig() {
    config = await (await fetch("ui/config.json")).json();
    $("title").textContent = config.title;
    document.title = config.title;
    for (const t of config.tasks) {
      const option = document.createElement("option");
      option.value = option.textContent = t.task;
      $("task").append(option);
    }
    $("task").value = "<OD>";
    for (const [id, key] of [["max-new-tokens", "max_new_tokens"], ["num-beams", "num_beams"]]) {
      $(id).value = config[key].default;
      $(id).max = config[key].max;
    }
    $("docs-link").hidden = !config.docs;
    if (config.api_key_required) $("api-key").placeholder = "required by this server";
    $("api-key").value = sessionStorage.getItem(KEY_STORE) || "";
    taskChanged();
  }

  function taskChanged() {
    const s = spec();
    $("text-row").hidden = !s.text;
    $("region-row").hidden = !s.region;
    drawRegion();
  }

  function setImage(file) {
    if (!file) return;
    if (!file.type.startsWith("image/")) { status(`not an image: ${file.name}`, true); return; }
    const reader = new FileReader();
    reader.onload = () => {
      const img = $("image");
      img.onload = () => {
        imageDataUrl = reader.result;
        imageSize = [img.naturalWidth, img.naturalHeight];
        // fit into 720 px x 70 % of the window, enlarging small images up to 3x (easier to drag a region on)
        const scale = Math.min(720 / imageSize[0], 0.7 * window.innerHeight / imageSize[1], 3);
        img.style.width = `${Math.round(imageSize[0] * scale)}px`;
        $("overlay").setAttribute("viewBox", `0 0 ${imageSize[0]} ${imageSize[1]}`);
        $("overlay").setAttribute("preserveAspectRatio", "none");
        $("shapes").replaceChildren();
        region = null;
        drawRegion();
        $("stage").hidden = false;
        $("placeholder").hidden = true;
        $("run").disabled = false;
        status(`${file.name}: ${imageSize[0]} × ${imageSize[1]} px`);
      };
      img.onerror = () => status(`the browser cannot show ${file.name}`, true);
      img.src = reader.result;
    };
    reader.readAsDataURL(file);
  }

  // --- region dragging -------------------------------------------------------------------------------
  function toImage(ev) {
    const r = $("overlay").getBoundingClientRect();
    const clamp = (v, hi) => Math.min(Math.max(v, 0), hi);
    return [clamp(Math.round((ev.clientX - r.left) / r.width * imageSize[0]), imageSize[0]),
      clamp(Math.round((ev.clientY - r.top) / r.height * imageSize[1]), imageSize[1])];
  }

  function drawRegion() {
    const rect = $("region");
    const show = Boolean(region && config && spec().region);
    rect.style.display = show ? "" : "none"; // SVG elements have no 'hidden' property
    $("region-label").textContent = region ? `${region.join(", ")} (x1, y1, x2, y2 px)` : "drag a box on the image";
    if (!show) return;
    rect.setAttribute("x", region[0]);
    rect.setAttribute("y", region[1]);
    rect.setAttribute("width", region[2] - region[0]);
    rect.setAttribute("height", region[3] - region[1]);
  }

  function onPointerDown(ev) {
    if (!imageSize || !spec().region) return;
    dragStart = toImage(ev);
    region = [...dragStart, ...dragStart];
    $("overlay").setPointerCapture(ev.pointerId);
    drawRegion();
    ev.preventDefault();
  }

  function onPointerMove(ev) {
    if (!dragStart) return;
    const p = toImage(ev);
    region = [Math.min(dragStart[0], p[0]), Math.min(dragStart[1], p[1]),
      Math.max(dragStart[0], p[0]), Math.max(dragStart[1], p[1])];
    drawRegion();
  }

  function onPointerUp() {
    if (!dragStart) return;
    dragStart = null;
    if (region[2] - region[0] < 1 || region[3] - region[1] < 1) region = null;
    drawRegion();
  }

  // --- drawing the answer ----------------------------------------------------------------------------
  function element(name, attrs, parent) {
    const el = document.createElementNS(SVG, name);
    for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
    parent.append(el);
    return el;
  }

  function points(flat) {
    const out = [];
    for (let i = 0; i + 1 < flat.length; i += 2) out.push(`${flat[i]},${flat[i + 1]}`);
    return out.join(" ");
  }

  function label(g, text, x, y, fill) { // -> the text element, or undefined for no text
    if (!text) return undefined;
    const size = Math.max(8, Math.min(imageSize[0], imageSize[1]) / 18);
    const t = element("text", {x, y: Math.max(size, y - size * 0.25), fill, "font-size": size, class: "label"}, g);
    t.textContent = text;
    return t;
  }

  // Every object of an answer, in the order of its scores (boxes, quad boxes, polygons), with its score (or null).
  function objectsOf(answer) {
    if (!answer || typeof answer !== "object") return [];
    const boxLabels = answer.bboxes_labels || answer.labels || [];
    const polygonLabels = answer.polygons_labels || answer.labels || [];
    const out = [];
    (answer.bboxes || []).forEach((shape, i) => out.push({kind: "box", shape, label: boxLabels[i]}));
    (answer.quad_boxes || []).forEach((shape, i) => out.push({kind: "quad", shape, label: answer.labels?.[i]}));
    (answer.polygons || []).forEach((shape, i) => out.push({kind: "polygon", shape, label: polygonLabels[i]}));
    const scores = Array.isArray(answer.scores) ? answer.scores : [];
    out.forEach((o, i) => { o.score = typeof scores[i] === "number" ? scores[i] : null; o.elements = []; });
    return out;
  }

  const scoreText = (score) => (score === null ? "" : score.toFixed(2));
  const captionOf = (o) => [o.label, scoreText(o.score)].filter(Boolean).join(" ");

  function drawObjects(objects) { // the shapes on the overlay and one list entry per object
    const g = $("shapes");
    g.replaceChildren();
    $("objects").replaceChildren();
    const texts = [];
    for (const o of objects) {
      const c = colour(o.label);
      if (o.kind === "box") {
        const [x1, y1, x2, y2] = o.shape;
        o.elements.push(element("rect", {x: Math.min(x1, x2), y: Math.min(y1, y2), width: Math.abs(x2 - x1),
          height: Math.abs(y2 - y1), stroke: c, class: "shape box"}, g));
        texts.push([o, Math.min(x1, x2), Math.min(y1, y2), c]);
      } else if (o.kind === "quad") {
        const q = o.shape;
        o.elements.push(element("polygon", {points: points(q), stroke: c, fill: "none", class: "shape quad"}, g));
        texts.push([o, Math.min(q[0], q[6]), Math.min(q[1], q[3]), c]);
      } else {
        for (const part of o.shape) {
          o.elements.push(element("polygon", {points: points(part), stroke: c, fill: c, class: "shape polygon"}, g));
        }
        const xs = o.shape.flatMap((p) => p.filter((_, j) => j % 2 === 0));
        const ys = o.shape.flatMap((p) => p.filter((_, j) => j % 2 === 1));
        if (xs.length) texts.push([o, Math.min(...xs), Math.min(...ys), c]);
      }
      const item = document.createElement("li");
      item.textContent = `${o.kind === "quad" ? "quad box" : o.kind}${o.label ? `: ${o.label}` : ""}`;
      if (o.score !== null) {
        const score = document.createElement("span");
        score.className = "score";
        score.textContent = scoreText(o.score);
        item.append(score);
      }
      $("objects").append(item);
      o.elements.push(item);
    }
    for (const [o, x, y, c] of texts) { // labels above every shape
      const t = label(g, captionOf(o), x, y, c);
      if (t) o.elements.push(t);
    }
  }

  function applyThreshold() { // hides the objects scored below the slider's value (client-side only)
    const t = Number($("threshold").value);
    $("threshold-value").textContent = t.toFixed(2);
    let shown = 0;
    for (const o of answerObjects) {
      const below = o.score !== null && o.score < t;
      for (const el of o.elements) el.classList.toggle("below", below);
      shown += below ? 0 : 1;
    }
    const scored = answerObjects.some((o) => o.score !== null);
    $("answer").textContent = answerSummary +
      (scored && shown < answerObjects.length ? ` (${shown} shown with score ≥ ${t.toFixed(2)})` : "");
  }

  function textOf(answer) { // a text answer (with its score), or null for a shape answer
    if (typeof answer === "string") return answer;
    const keys = Object.keys(answer || {}).sort().join();
    if (keys !== "scores,text") return null;
    return answer.scores === null ? answer.text : `${answer.text} (score ${scoreText(answer.scores)})`;
  }

  function summary(answer) {
    const parts = [];
    for (const [key, one, many] of [["bboxes", "box", "boxes"], ["quad_boxes", "quad box", "quad boxes"],
      ["polygons", "polygon", "polygons"]]) {
      const n = (answer[key] || []).length;
      if (key in answer) parts.push(`${n} ${n === 1 ? one : many}`);
    }
    const labels = [...new Set([...(answer.labels || []), ...(answer.bboxes_labels || []),
      ...(answer.polygons_labels || [])])].filter(Boolean);
    return parts.join(", ") + (labels.length ? `: ${labels.join(", ")}` : "");
  }

  // --- running ---------------------------------------------------------------------------------------
  function request() { // -> the /v1/infer body, or null (after saying why)
    const s = spec();
    const body = {image: imageDataUrl, task: s.task, generation: {
      max_new_tokens: Number($("max-new-tokens").value), num_beams: Number($("num-beams").value)}};
    if ($("scores").checked) body.scores = true;
    if (s.text) {
      if (!$("text").value.trim()) { status(`${s.task} needs text`, true); return null; }
      body.text = $("text").value;
    }
    if (s.region) {
      if (!region) { status(`${s.task} needs a region: drag a box on the image`, true); return null; }
      body.region = region;
    }
    return body;
  }

  async function run(ev) {
    ev.preventDefault();
    if (!imageDataUrl) return;
    const body = request();
    if (!body) return;
    const headers = {"content-type": "application/json", accept: "application/json"};
    const key = $("api-key").value.trim();
    if (key) headers.authorization = `Bearer ${key}`;
    sessionStorage.setItem(KEY_STORE, key);
    $("run").disabled = true;
    status(`running ${body.task} …`);
    const t0 = performance.now();
    try {
      const r = await fetch("v1/infer", {method: "POST", headers, body: JSON.stringify(body)});
      const data = await r.json();
      const ms = performance.now() - t0;
      if (!r.ok) {
        $("shapes").replaceChildren();
        $("objects").replaceChildren();
        answerObjects = [];
        $("answer").textContent = "";
        $("json").textContent = JSON.stringify(data, null, 2);
        status(`${r.status} ${data.error?.kind ?? ""}: ${data.error?.message ?? r.statusText}`, true);
        return;
      }
      const answer = data.result[body.task];
      $("json").textContent = JSON.stringify(data.result, null, 2);
      answerObjects = objectsOf(answer);
      drawObjects(answerObjects);
      const n = answerObjects.length;
      answerSummary = textOf(answer) ?? summary(answer);
      applyThreshold();
      const t = data.timing_ms;
      const f = (v) => v.toFixed(1);
      $("timing").textContent = `server ${f(t.total)} ms (image decode ${f(t.decode_image)}, queue ${f(t.queue)}, ` +
        `inference ${f(t.inference)}; batch of ${data.batch_size}); round trip ${f(ms)} ms`;
      status(`${body.task}: done, ${n} shape${n === 1 ? "" : "s"} drawn`);
    } catch (e) {
      status(`request failed: ${e}`, true);
    } finally {
      $("run").disabled = false;
    }
  }

  function wire() {
    $("task").addEventListener("change", taskChanged);
    $("file").addEventListener("change", (ev) => setImage(ev.target.files[0]));
    const drop = $("drop");
    for (const t of ["dragenter", "dragover"]) drop.addEventListener(t, (ev) => { ev.preventDefault(); drop.classList.add("over"); });
    for (const t of ["dragleave", "drop"]) drop.addEventListener(t, () => drop.classList.remove("over"));
    drop.addEventListener("drop", (ev) => { ev.preventDefault(); setImage(ev.dataTransfer.files[0]); });
    const overlay = $("overlay");
    overlay.addEventListener("pointerdown", onPointerDown);
    overlay.addEventListener("pointermove", onPointerMove);
    overlay.addEventListener("pointerup", onPointerUp);
    overlay.addEventListener("pointercancel", onPointerUp);
    $("clear-region").addEventListener("click", () => { region = null; drawRegion(); });
    $("threshold").addEventListener("input", applyThreshold);
    $("scores").addEventListener("change", () => { $("threshold").disabled = !$("scores").checked; });
    $("controls").addEventListener("submit", run);
  }

  wire();
  loadConfig().catch((e) => status(`cannot load ui/config.json: ${e}`, true));
})();
