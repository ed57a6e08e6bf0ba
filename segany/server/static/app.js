// The annotation page: image list, prompts decoded in the browser (onnxruntime-web) on the
// server's embedding, brush/eraser, masks with classes and timings (masks.js, classes.js),
// pre-fill proposals and their review, export, retraining. Every action goes through the JSON
// API documented at /docs.

import { loadClasses, onClassesChanged, pickByKey, pickClass, useClass } from "./classes.js";
import { BrowserDecoder } from "./decoder.js";
import { showFigures } from "./figures.js";
import { listen } from "./live.js";
import {
  accept, afterChange, cancelDelete, clearSelection, confirmDelete, deleteMask, edit, loadMasks,
  onImagesChanged, paintMasks, reject, selectMask, toggleHidden, who,
} from "./masks.js";
import { cycle, decodeWith, redo, resetPrompt, undo } from "./prompting.js";
import { loadTeam, nextToReview, signIn } from "./team.js";
import { $, api, overlay, redraw, state, status, view } from "./state.js";
import {
  isLarge, overviewImage, windowAround, windowBody, windowImage, windowText, withWindow,
} from "./windows.js";
import { zoomKeys } from "./zoom.js";

// ----- images ---------------------------------------------------------------------------------
async function loadImages() {
  const { body } = await api(`/images${state.user && $("mine").checked ? "?mine=true" : ""}`);
  state.images = body.images;
  const c = body.counts;
  const total = body.images.length;
  const finished = c.annotated + c.skipped;
  $("progress-bar").style.width = total ? `${(100 * finished) / total}%` : "0";
  $("progress-text").textContent =
    `${c.annotated} annotated · ${c.skipped} skipped · ${c.todo} to do · ${c.reviewed} reviewed`;
  const list = $("image-list");
  list.replaceChildren();
  for (const image of body.images) {
    const li = document.createElement("li");
    li.dataset.id = image.id;
    li.className = state.image && state.image.id === image.id ? "current" : "";
    const name = document.createElement("span");
    name.textContent = image.path.split("/").pop();
    const badge = document.createElement("span");
    badge.className = `badge ${image.status}${image.reviewed ? " reviewed" : ""}`;
    badge.textContent = image.masks || image.proposals
      ? `${image.masks}${image.proposals ? ` +${image.proposals}?` : ""}${image.reviewed ? " ✓" : ""}`
      : image.status;
    badge.title = `${image.masks} masks, ${image.proposals} proposals, ${image.unreviewed} ` +
      `unreviewed${image.reviewed ? ": reviewed" : ""}`;
    li.append(name, badge);
    if (image.assignee) {
      const assignee = document.createElement("span");
      assignee.className = "who";
      assignee.textContent = image.assignee;
      li.append(assignee);
    }
    li.onclick = () => openImage(image.id);
    list.append(li);
  }
  return body;
}

async function openImage(id) {
  const { body: image } = await api(`/images/${id}`);
  // a large image opens as its overview (windows.js)
  state.full = isLarge(image) ? image : null;
  state.window = null;
  state.grid = state.full ? (await api(`/images/${id}/windows`)).body : null;
  await show(state.full ? overviewImage(image) : image);
}

// A window of the large image open, around its pixel (x, y), or `win` itself when given.
async function openWindow(x, y, win = null) {
  if (!state.full) return;
  state.window = win || windowAround(state.full, x, y);
  await show(windowImage(state.full, state.window));
}

// The next window of the grid (dx, dy: -1, 0 or 1 steps), kept inside the image.
async function moveWindow(dx, dy) {
  if (!state.window) return;
  const [x0, y0, x1, y1] = state.window;
  await openWindow(0, 0, windowAround(state.full, (x0 + x1) / 2, (y0 + y1) / 2, dx, dy));
}

async function showOverview() {
  if (!state.full || !state.window) return;
  state.window = null;
  await show(overviewImage(state.full));
}

// `image`: what the page works on (the image, or a large image's overview or window).
async function show(image) {
  const id = image.id;
  state.image = image;
  state.embedding = null;
  resetPrompt();
  state.editing = null;
  state.selected = null;
  pickClass(null);
  state.hidden = new Set();
  const element = new Image();
  element.src = image.url;
  await element.decode();
  state.element = element;
  $("hint").hidden = true;
  view.fit(element);
  $("window-bar").hidden = !state.full;
  $("window-text").textContent = windowText();
  $("window-overview").disabled = !state.window;
  const embedding = image.overview ? null : loadEmbedding(); // (an overview: none)
  await Promise.all([loadMasks(), embedding, loadImages()]);
  state.started = performance.now();
  redraw();
  document.body.dataset.image = String(id);
  document.body.dataset.window = state.window ? state.window.join(",") : "";
  if (state.user) $("assign").value = String(image.assignee_id ?? "");
  localStorage.setItem("segany-image", String(id)); // reopened after a reload
}

async function loadEmbedding() {
  const id = state.image.id;
  status("computing the embedding…");
  const { body, headers } = await api(withWindow(`/images/${id}/embedding`));
  const parse = (name) => headers.get(name).split(",").map(Number);
  // SAM-HQ's decoder in the page also reads the encoder's early map (computed with the
  // embedding, so this costs only its transfer)
  const early = state.decoder?.needsEarly ? await api(withWindow(`/images/${id}/early`)) : null;
  // SAM 2's decoder reads its two high-resolution maps (kept with the embedding too)
  const highRes = state.decoder?.needsHighRes
    ? await api(withWindow(`/images/${id}/high_res`)) : null;
  if (!state.image || state.image.id !== id || state.image.overview) return;
  state.embedding = {
    data: new Float32Array(body),
    shape: parse("x-shape"),
    originalSize: parse("x-original-size"),
    inputSize: parse("x-input-size"),
    early: early && {
      data: new Float32Array(early.body),
      shape: early.headers.get("x-shape").split(",").map(Number),
    },
    highRes: highRes && highResMaps(highRes),
  };
  status("");
}

// /images/ID/high_res's answer -> {maps [{data, shape}: high_res_feats_0, then _1], stability}
function highResMaps({ body, headers }) {
  const numbers = (name) => headers.get(name).split(",").map(Number);
  const shapes = [numbers("x-shape-0"), numbers("x-shape-1")];
  let offset = 0;
  const maps = shapes.map((shape) => {
    const size = shape.reduce((a, b) => a * b, 1);
    const data = new Float32Array(body, offset * 4, size);
    offset += size;
    return { data, shape };
  });
  return { maps, stability: numbers("x-stability") };
}

async function nextImage() {
  const body = await loadImages();
  if (body.next_id !== null) await openImage(body.next_id);
  else status("every image is annotated or skipped");
}

async function setStatus(value) {
  if (!state.image) return;
  const { body } = await api(`/images/${state.image.id}/status`, {
    method: "PUT", json: { status: value } });
  await nextImage();
  if (body.warning) status(body.warning); // skipping an image with masks drops them from exports
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

// Pre-fill with the model's own thresholds (the field starts at them; a changed value is sent).
async function prefill() {
  if (!state.image) return;
  if (state.image.overview) {
    status("a large image is pre-filled a window at a time: open one first (click on it)");
    return;
  }
  status("pre-filling: segmenting everything…");
  const json = { save: true, author: who() || null };
  const iou = Number($("prefill-iou").value);
  const stability = Number($("prefill-stability").value);
  if (iou !== state.prefill.pred_iou_thresh) json.pred_iou_thresh = iou;
  if (stability !== state.prefill.stability_score_thresh) json.stability_score_thresh = stability;
  try {
    const { body } = await api(`/images/${state.image.id}/prefill`, { json: windowBody(json) });
    const t = body.thresholds;
    const dup = body.duplicates ? ` (${body.duplicates} duplicates of masks left out)` : "";
    status(body.saved.length
      ? `pre-fill: ${body.saved.length} proposals${dup}; a accept, r reject, t edit`
      : `pre-fill found nothing new at predicted IoU ≥ ${t.pred_iou_thresh} and stability ≥ ${
        t.stability_score_thresh}${dup}: lower the thresholds to see more`);
    await afterChange();
    const first = state.masks.find((m) => m.review === "proposed");
    if (first) selectMask(first.id);
    document.body.dataset.prefill = String(body.saved.length);
  } catch (error) {
    status(error.message);
  }
}

async function exportProject() {
  const choice = $("export-format").value;
  const json = choice === "coco-polygons" ? { format: "coco", polygons: true } : { format: choice };
  try {
    const { body } = await api("/export", { json });
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
    const notes = body.warnings.length ? ` · ${body.warnings.join(" · ")}` : "";
    status(`exported ${body.masks} masks to ${body.folder}${notes}`);
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
  state.prefill = body.prefill;
  $("prefill-iou").value = String(body.prefill.pred_iou_thresh);
  $("prefill-stability").value = String(body.prefill.stability_score_thresh);
  $("model-info").textContent = `model version ${body.model_version}`;
  await loadVersions(body.model_version);
  state.maxPixels = body.max_pixels;
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
  if (state.image && !state.image.overview) await loadEmbedding();
}

// The reviewer's queue: the first image with masks or proposals waiting for a decision.
async function reviewNext() {
  const id = await nextToReview();
  if (id === null) status("nothing waits for a review");
  else await openImage(id);
}

// The model versions, to switch to one or roll back (admins, or anyone single-user).
async function loadVersions(current) {
  const select = $("model-version");
  const { body } = await api("/models");
  select.replaceChildren(...body.map((m) => new Option(
    `v${m.version}${m.parent !== null ? ` (from v${m.parent})` : ""}: ${m.note}`, m.version)));
  select.value = String(current);
  select.disabled = body.length < 2 || (state.user !== null && state.user.role !== "admin");
}

async function switchModel() {
  const version = Number($("model-version").value);
  try {
    await api("/models/current", { method: "PUT", json: { version } });
    await loadModel();
    status(`model version ${version} is current`);
  } catch (error) {
    status(error.message);
  }
}

// ----- keyboard -------------------------------------------------------------------------------
function toggleHelp(show) {
  $("help").hidden = show === undefined ? !$("help").hidden : !show;
}

// Enter in the class field: that class (added if new) is picked, and the mask being made, if
// any, is accepted with it.
async function classFromField() {
  const field = $("label");
  field.blur(); // back to the canvas shortcuts
  const found = await useClass(field.value);
  field.value = "";
  if (found && state.current) await accept();
}

window.addEventListener("keydown", (e) => {
  if (state.confirming !== null) { // a delete waits for its answer
    e.preventDefault();
    if (["Enter", "Delete", "y"].includes(e.key)) confirmDelete();
    else if (["Escape", "n"].includes(e.key)) cancelDelete();
    return;
  }
  if (!$("login").hidden) return;
  if (e.target.tagName === "INPUT" || e.target.tagName === "SELECT") {
    if (e.key === "Enter" && e.target.id === "label") classFromField();
    if (e.key === "Enter" && e.target.id === "review-note") {
      e.target.blur();
      reject(); // the selected mask, with the note
    }
    if (e.key === "Escape") e.target.blur();
    return;
  }
  if (/^[0-9]$/.test(e.key) && !e.ctrlKey && !e.metaKey && !e.altKey) {
    e.preventDefault();
    pickByKey(Number(e.key));
    return;
  }
  const key = e.key;
  if ((e.ctrlKey || e.metaKey) && (key === "y" || (e.shiftKey && key.toLowerCase() === "z"))) {
    e.preventDefault();
    redo();
    return;
  }
  const actions = {
    y: redo, q: () => state.user && reviewNext(),
    a: accept, Enter: accept, c: cycle, Tab: cycle, z: undo, v: () => setTool("point"),
    b: () => setTool("brush"), e: () => setTool("erase"), f: prefill, x: exportProject,
    n: nextImage, d: () => setStatus("annotated"), s: () => setStatus("skipped"),
    "?": () => toggleHelp(), l: () => $("label").focus(), r: reject, t: () => edit(setTool),
    "[": () => { state.brushRadius = Math.max(1, state.brushRadius - 2); },
    "]": () => { state.brushRadius += 2; },
    h: () => state.selected !== null && toggleHidden(state.selected),
    o: showOverview,
    Delete: () => state.selected !== null && deleteMask(state.selected),
    Backspace: () => state.selected !== null && deleteMask(state.selected),
    Escape: () => {
      if (!$("help").hidden) toggleHelp(false);
      else if (state.selected !== null) clearSelection();
      else {
        resetPrompt();
        redraw();
      }
    },
  };
  for (const [name, zoom] of Object.entries(zoomKeys)) {
    actions[name] = () => {
      if (!state.image) return;
      zoom();
      redraw();
    };
  }
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
$("reject").onclick = reject;
$("edit").onclick = () => edit(setTool);
$("add-class").onclick = classFromField;
$("cycle").onclick = cycle;
$("undo").onclick = undo;
$("redo").onclick = redo;
$("confirm-yes").onclick = confirmDelete;
$("confirm-no").onclick = cancelDelete;
$("mine").onchange = () => loadImages();
$("review-next").onclick = () => reviewNext();
$("assign").onchange = async () => {
  if (!state.image) return;
  const value = $("assign").value;
  try {
    await api(`/images/${state.image.id}/assignee`, {
      method: "PUT", json: { user_id: value === "" ? null : Number(value) } });
    await loadImages();
  } catch (error) {
    status(error.message);
  }
};
$("clear").onclick = () => {
  resetPrompt();
  redraw();
};
$("prefill").onclick = prefill;
$("export").onclick = exportProject;
$("retrain").onclick = retrain;
$("model-version").onchange = switchModel;
$("help-button").onclick = () => toggleHelp();
$("figures").onclick = () => showFigures().catch((error) => status(error.message));
$("help").onclick = () => toggleHelp(false);
$("window-overview").onclick = () => showOverview();
for (const button of document.querySelectorAll("#window-bar [data-move]")) {
  const [dx, dy] = button.dataset.move.split(",").map(Number);
  button.onclick = () => moveWindow(dx, dy);
}
state.onOverviewClick = (x, y) => openWindow(x * state.image.overview, y * state.image.overview);
$("author").value = localStorage.getItem("segany-author") || "";
$("author").onchange = () => localStorage.setItem("segany-author", $("author").value.trim());

// For scripts and end-to-end tests: the state and both decoders on the same prompt.
window.segany = {
  state,
  view,
  openImage,
  openWindow,
  decode: (prompt, multimask, where) => decodeWith(prompt, multimask, where),
  ready: (async () => {
    view.fit(null);
    await signIn(); // a team project: who is at this page (single-user: nobody to ask)
    if (state.user) await loadTeam();
    onImagesChanged(loadImages);
    onClassesChanged(async () => {
      if (state.image) await loadMasks();
      redraw();
    });
    await loadClasses();
    await loadImages();
    await loadModel();
    listen(loadImages, loadModel);
    const last = Number(localStorage.getItem("segany-image"));
    if (state.images.some((image) => image.id === last)) await openImage(last);
    document.body.dataset.ready = "1";
  })(),
};
