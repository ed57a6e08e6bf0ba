// The annotation page: image list, prompts decoded in the browser (onnxruntime-web) on the
// server's embedding, brush/eraser, accepted masks with labels and timings, pre-fill, export,
// retraining. Every action goes through the JSON API documented at /docs.

import { BrowserDecoder } from "./decoder.js";
import { cycle, decodeWith, resetPrompt, undo } from "./prompting.js";
import { maskArea, rleDecode, rleEncode } from "./rle.js";
import { $, api, overlay, redraw, state, status, view } from "./state.js";
import { colorOf } from "./view.js";

// ----- images ---------------------------------------------------------------------------------
async function loadImages() {
  const { body } = await api("/images");
  state.images = body.images;
  const c = body.counts;
  const total = body.images.length;
  const finished = c.annotated + c.skipped;
  $("progress-bar").style.width = total ? `${(100 * finished) / total}%` : "0";
  $("progress-text").textContent =
    `${c.annotated} annotated · ${c.skipped} skipped · ${c.todo} to do`;
  const list = $("image-list");
  list.replaceChildren();
  for (const image of body.images) {
    const li = document.createElement("li");
    li.dataset.id = image.id;
    li.className = state.image && state.image.id === image.id ? "current" : "";
    const name = document.createElement("span");
    name.textContent = image.path.split("/").pop();
    const badge = document.createElement("span");
    badge.className = `badge ${image.status}`;
    badge.textContent = image.masks ? `${image.masks}` : image.status;
    li.append(name, badge);
    li.onclick = () => openImage(image.id);
    list.append(li);
  }
  return body;
}

async function openImage(id) {
  const { body: image } = await api(`/images/${id}`);
  state.image = image;
  state.embedding = null;
  resetPrompt();
  state.editing = null;
  state.selected = null;
  state.hidden = new Set();
  const element = new Image();
  element.src = image.url;
  await element.decode();
  state.element = element;
  $("hint").hidden = true;
  view.fit(element);
  await Promise.all([loadMasks(), loadEmbedding(), loadImages()]);
  state.started = performance.now();
  redraw();
  document.body.dataset.image = String(id);
}

async function loadEmbedding() {
  const id = state.image.id;
  status("computing the embedding…");
  const { body, headers } = await api(`/images/${id}/embedding`);
  const parse = (name) => headers.get(name).split(",").map(Number);
  if (!state.image || state.image.id !== id) return;
  state.embedding = {
    data: new Float32Array(body),
    shape: parse("x-shape"),
    originalSize: parse("x-original-size"),
    inputSize: parse("x-input-size"),
  };
  status("");
}

async function nextImage() {
  const body = await loadImages();
  if (body.next_id !== null) await openImage(body.next_id);
  else status("every image is annotated or skipped");
}

async function setStatus(value) {
  if (!state.image) return;
  await api(`/images/${state.image.id}/status`, { method: "PUT", json: { status: value } });
  await nextImage();
}

async function upload(files) {
  let last = null;
  for (const file of files) {
    const form = new FormData();
    form.append("file", file, file.name);
    try {
      const { body } = await api("/images", { method: "POST", body: form });
      last = body;
    } catch (error) {
      status(`${file.name}: ${error.message}`);
    }
  }
  await loadImages();
  if (last) await openImage(last.id);
}

// ----- masks ----------------------------------------------------------------------------------
async function loadMasks() {
  const { body } = await api(`/images/${state.image.id}/masks`);
  state.masks = body.map((m) => ({ ...m, bits: rleDecode(m.rle) }));
  renderMaskList();
  paintMasks();
}

function renderMaskList() {
  const list = $("mask-list");
  list.replaceChildren();
  for (const m of state.masks) {
    const li = document.createElement("li");
    li.dataset.id = m.id;
    li.className = `${m.id === state.selected ? "selected" : ""} ${
      state.hidden.has(m.id) ? "hidden-mask" : ""}`;
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.background = `rgb(${colorOf(m.id).join(",")})`;
    const name = document.createElement("span");
    name.className = "name";
    name.textContent = `${m.label || "(no label)"} · ${m.origin} · ${m.area}px`;
    name.title = `${m.seconds.toFixed(1)} s · model v${m.model_version ?? "?"} · by ${
      m.author || "?"}`;
    const hide = button(state.hidden.has(m.id) ? "show" : "hide", "hide/show (h)", () =>
      toggleHidden(m.id));
    const remove = button("×", "delete (Delete)", () => deleteMask(m.id));
    li.append(swatch, name, hide, remove);
    li.onclick = (e) => {
      if (e.target === li || e.target === name || e.target === swatch) selectMask(m.id);
    };
    list.append(li);
  }
}

function button(text, title, action) {
  const b = document.createElement("button");
  b.textContent = text;
  b.title = title;
  b.onclick = (e) => {
    e.stopPropagation();
    action();
  };
  return b;
}

function paintMasks() {
  if (!state.image) return;
  view.paintMasks(state.masks, state.hidden, state.selected, state.image.width,
    state.image.height);
}

function toggleHidden(id) {
  if (state.hidden.has(id)) state.hidden.delete(id);
  else state.hidden.add(id);
  renderMaskList();
  paintMasks();
  redraw();
}

function selectMask(id) {
  const m = state.masks.find((x) => x.id === id);
  if (!m) return;
  resetPrompt();
  state.selected = id;
  state.editing = { id, version: m.version, seconds: m.seconds };
  state.current = m.bits.slice(); // edit a copy with the brush, then accept to save
  $("label").value = m.label;
  state.started = performance.now();
  renderMaskList();
  paintMasks();
  redraw();
}

async function deleteMask(id) {
  const m = state.masks.find((x) => x.id === id);
  if (!m) return;
  try {
    await api(`/masks/${id}?version=${m.version}`, { method: "DELETE" });
  } catch (error) {
    status(error.status === 409 ? "someone changed this mask: reloaded" : error.message);
  }
  if (state.selected === id) resetPrompt();
  state.selected = null;
  await loadMasks();
  await loadImages();
  redraw();
}

function origin() {
  if (state.editing) return "edited";
  const prompted = state.prompt.points.length > 0 || state.prompt.box;
  if (state.brushed) return prompted ? "edited" : "brush";
  if (state.prompt.box && state.prompt.points.length === 0) return "box";
  return "clicks";
}

async function accept() {
  if (!state.image || !state.current || maskArea(state.current) === 0) {
    status("nothing to accept: click on an object first");
    return;
  }
  const seconds = (performance.now() - state.started) / 1000;
  const rle = rleEncode(state.current, state.image.height, state.image.width);
  const label = $("label").value.trim();
  try {
    if (state.editing) {
      const e = state.editing;
      await api(`/masks/${e.id}`, {
        method: "PATCH",
        json: {
          version: e.version, rle, label, origin: "edited", seconds: e.seconds + seconds,
          author: $("author").value.trim() || undefined,
        },
      });
    } else {
      const output = state.outputs[state.choice];
      await api(`/images/${state.image.id}/masks`, {
        json: {
          rle,
          label,
          author: $("author").value.trim(),
          origin: origin(),
          prompts: { points: state.prompt.points, labels: state.prompt.labels,
            box: state.prompt.box },
          model_version: state.modelVersion,
          predicted_iou: output && !state.brushed ? output.score : null,
          seconds,
        },
      });
    }
    status(`accepted (${seconds.toFixed(1)} s)`);
  } catch (error) {
    if (error.status === 409) {
      const who = error.body.current ? "edited" : "deleted";
      status(`not saved: someone ${who} this mask meanwhile; the list shows the current state`);
    } else {
      status(error.message);
    }
  }
  resetPrompt();
  state.selected = null;
  await loadMasks();
  await loadImages();
  redraw();
}

window.addEventListener("resize", () => {
  view.fit(state.element);
  paintMasks();
  redraw();
});

// ----- tools, pre-fill, export, retraining ----------------------------------------------------
function setTool(tool) {
  state.tool = tool;
  for (const t of ["point", "brush", "erase"]) {
    $(`tool-${t}`).classList.toggle("active", t === tool);
  }
  overlay.brushAt = null;
  state.hover = null;
  redraw();
}

async function prefill() {
  if (!state.image) return;
  status("pre-filling: segmenting everything…");
  const iou = Number($("prefill-iou").value);
  try {
    const { body } = await api(`/images/${state.image.id}/prefill`, {
      json: { save: true, pred_iou_thresh: iou, stability_score_thresh: Math.min(0.95, iou) },
    });
    status(`pre-fill: ${body.saved.length} masks added; keep, edit or delete them`);
  } catch (error) {
    status(error.message);
  }
  await loadMasks();
  await loadImages();
  redraw();
}

async function exportProject() {
  const format = $("export-format").value;
  try {
    const { body } = await api("/export", { json: { format } });
    const list = $("export-files");
    list.replaceChildren();
    for (const file of body.files) {
      const li = document.createElement("li");
      const a = document.createElement("a");
      a.href = `/api/${file}`;
      a.textContent = file;
      a.download = file.split("/").pop();
      li.append(a);
      list.append(li);
    }
    status(`exported ${body.masks} masks to ${body.folder}`);
    document.body.dataset.export = body.folder;
  } catch (error) {
    status(error.message);
  }
}

async function retrain() {
  const steps = Number($("retrain-steps").value);
  let job;
  try {
    ({ body: job } = await api("/train", { json: { steps } }));
  } catch (error) {
    status(error.message);
    return;
  }
  while (job.status === "queued" || job.status === "running") {
    $("train-info").textContent = `retraining: step ${job.step}/${job.steps} · ${job.message}`;
    await new Promise((r) => setTimeout(r, 1000));
    ({ body: job } = await api(`/train/${job.id}`));
  }
  $("train-info").textContent = job.message;
  if (job.status === "done") await loadModel();
}

async function loadModel() {
  const { body } = await api("/project");
  state.modelVersion = body.model_version;
  $("model-info").textContent = `model version ${body.model_version}`;
  state.decoder = null;
  document.body.dataset.decoder = "server";
  if (body.decoder_onnx) {
    try {
      state.decoder = await BrowserDecoder.load(`/api/decoder.onnx?v=${body.model_version}`);
      document.body.dataset.decoder = "browser";
    } catch (error) {
      status(`in-browser decoder unavailable (${error.message}); the server decodes`);
    }
  }
  $("model-info").textContent += state.decoder ? " · decoder in the browser" :
    " · decoder on the server";
  if (state.image) await loadEmbedding();
}

// ----- keyboard -------------------------------------------------------------------------------
function toggleHelp(show) {
  $("help").hidden = show === undefined ? !$("help").hidden : !show;
}

window.addEventListener("keydown", (e) => {
  if (e.target.tagName === "INPUT" || e.target.tagName === "SELECT") {
    if (e.key === "Enter" && e.target.id === "label") {
      e.target.blur(); // back to the canvas shortcuts
      accept();
    }
    if (e.key === "Escape") e.target.blur();
    return;
  }
  const key = e.key;
  const actions = {
    a: accept, Enter: accept, c: cycle, Tab: cycle, z: undo, v: () => setTool("point"),
    b: () => setTool("brush"), e: () => setTool("erase"), f: prefill, x: exportProject,
    n: nextImage, d: () => setStatus("annotated"), s: () => setStatus("skipped"),
    "?": () => toggleHelp(), l: () => $("label").focus(),
    "[": () => { state.brushRadius = Math.max(1, state.brushRadius - 2); },
    "]": () => { state.brushRadius += 2; },
    h: () => state.selected !== null && toggleHidden(state.selected),
    Delete: () => state.selected !== null && deleteMask(state.selected),
    Backspace: () => state.selected !== null && deleteMask(state.selected),
    Escape: () => {
      if (!$("help").hidden) toggleHelp(false);
      else {
        resetPrompt();
        state.selected = null;
        renderMaskList();
        paintMasks();
        redraw();
      }
    },
  };
  const action = actions[key];
  if (!action || (e.ctrlKey && key !== "z") || e.metaKey) return;
  e.preventDefault();
  action();
});

// ----- buttons and start ----------------------------------------------------------------------
$("next").onclick = nextImage;
$("done").onclick = () => setStatus("annotated");
$("skip").onclick = () => setStatus("skipped");
$("upload").onchange = (e) => upload([...e.target.files]);
$("tool-point").onclick = () => setTool("point");
$("tool-brush").onclick = () => setTool("brush");
$("tool-erase").onclick = () => setTool("erase");
$("accept").onclick = accept;
$("cycle").onclick = cycle;
$("undo").onclick = undo;
$("clear").onclick = () => {
  resetPrompt();
  redraw();
};
$("prefill").onclick = prefill;
$("export").onclick = exportProject;
$("retrain").onclick = retrain;
$("help-button").onclick = () => toggleHelp();
$("help").onclick = () => toggleHelp(false);
$("author").value = localStorage.getItem("segany-author") || "";
$("author").onchange = () => localStorage.setItem("segany-author", $("author").value.trim());

// For scripts and end-to-end tests: the state and both decoders on the same prompt.
window.segany = {
  state,
  openImage,
  decode: (prompt, multimask, where) => decodeWith(prompt, multimask, where),
  ready: (async () => {
    view.fit(null);
    await loadImages();
    await loadModel();
    document.body.dataset.ready = "1";
  })(),
};
