// The image's masks in the page: the list, the overlay (coloured by class), selecting, hiding,
// deleting (after a confirmation), and the decisions: accept (a new mask, or a selected one with
// its edits), reject and edit. Pre-filled proposals wait for one of those; after a decision the
// next mask still waiting (proposed or unreviewed) is selected, so a review is one key per mask.
// In a team project the signed-in user signs everything, and an annotator's accept on a
// selected mask saves its edits without deciding (reviewers and admins decide).

import { classOf, pickClass, rgbOf } from "./classes.js";
import { resetPrompt } from "./prompting.js";
import { maskArea, rleDecode, rleEncode } from "./rle.js";
import { $, api, redraw, state, status, view } from "./state.js";
import { colorOf } from "./view.js";
import { windowBody, withWindow } from "./windows.js";

let imagesChanged = async () => {};

export function onImagesChanged(fn) {
  imagesChanged = fn;
}

export function maskColor(m) {
  const c = classOf(m.class_id);
  return c ? rgbOf(c.color) : colorOf(m.id);
}

export async function loadMasks() {
  if (state.image.overview) { // a large image's overview: the masks shrunk with it, and boxes
    const k = state.image.overview;
    const { body } = await api(`/images/${state.image.id}/masks?scale=${k}`);
    const shown = body.filter((m) => m.review !== "rejected");
    state.overviewBoxes = shown.map((m) => ({ bbox: m.bbox.map((v) => v / k), color: maskColor(m) }));
    state.overviewMasks = shown.map((m) => ({ ...m, bits: rleDecode(m.rle) }));
    state.masks = [];
  } else {
    const { body } = await api(withWindow(`/images/${state.image.id}/masks`));
    state.masks = body.map((m) => ({ ...m, bits: rleDecode(m.rle) }));
  }
  renderMaskList();
  paintMasks();
}

export function renderMaskList() {
  const list = $("mask-list");
  list.replaceChildren();
  for (const m of state.masks) {
    const li = document.createElement("li");
    li.dataset.id = m.id;
    li.dataset.review = m.review;
    li.className = `${m.id === state.selected ? "selected" : ""} ${
      state.hidden.has(m.id) ? "hidden-mask" : ""} review-${m.review}`;
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.background = `rgb(${maskColor(m).join(",")})`;
    // The class name in full on its own line (long names wrap), then how the mask was made and
    // decided, then the reviewer's note: all readable without a tooltip.
    const name = document.createElement("span");
    name.className = "name";
    const label = line("label", m.label || "(no class)");
    const meta = line("meta", `${m.origin} · ${m.review}${
      m.reviewer ? ` by ${m.reviewer}` : ""} · ${m.area}px · by ${m.author || "?"}`);
    name.append(label, meta);
    if (m.review_note) name.append(line("note", `“${m.review_note}”`));
    name.title = `${m.seconds.toFixed(1)} s · model v${m.model_version ?? "?"}${
      m.edits || m.relabels ? ` · ${m.edits} edits, ${m.relabels} relabels` : ""}`;
    const hide = button(state.hidden.has(m.id) ? "show" : "hide", "hide/show (h)", () =>
      toggleHidden(m.id));
    const remove = button("×", "delete (Delete)", () => deleteMask(m.id));
    li.append(swatch, name, hide, remove);
    li.onclick = (e) => {
      if (e.target === li || name.contains(e.target) || e.target === swatch) selectMask(m.id);
    };
    list.append(li);
  }
}

function line(kind, text) {
  const span = document.createElement("span");
  span.className = kind;
  span.textContent = text;
  return span;
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

export function paintMasks() {
  if (!state.image) return;
  const shown = state.image.overview
    ? state.overviewMasks
    : state.masks.filter((m) => m.review !== "rejected");
  view.paintMasks(shown, state.hidden, state.selected, state.image.width, state.image.height,
    maskColor);
}

export function toggleHidden(id) {
  if (state.hidden.has(id)) state.hidden.delete(id);
  else state.hidden.add(id);
  renderMaskList();
  paintMasks();
  redraw();
}

export function selectMask(id) {
  const m = state.masks.find((x) => x.id === id);
  if (!m) return;
  resetPrompt();
  state.selected = id;
  state.editing = { id, version: m.version, seconds: m.seconds };
  state.current = m.bits.slice(); // edit a copy with the brush, then accept to save
  pickClass(m.class_id);
  state.started = performance.now();
  renderMaskList();
  paintMasks();
  redraw();
}

// The next mask waiting for a decision (after `afterId` in list order), selected; or none.
function selectNextPending(afterId) {
  const waiting = state.masks.filter((m) => m.review === "proposed" ||
    m.review === "unreviewed");
  const next = waiting.find((m) => m.id > afterId) || waiting[0];
  if (next) selectMask(next.id);
  else clearSelection();
}

export function clearSelection() {
  resetPrompt();
  state.selected = null;
  pickClass(null);
  renderMaskList();
  paintMasks();
  redraw();
}

// Delete asks first (a bar at the top: Enter, Delete or y deletes; Esc or n keeps the mask).
export function deleteMask(id) {
  const m = state.masks.find((x) => x.id === id);
  if (!m) return;
  state.confirming = id;
  $("confirm-text").textContent =
    `Delete mask ${m.id} (${m.label || "no class"} · ${m.origin} · ${m.area}px)?`;
  $("confirm").hidden = false;
  document.body.dataset.confirming = String(id);
}

export function cancelDelete() {
  state.confirming = null;
  $("confirm").hidden = true;
  delete document.body.dataset.confirming;
}

export async function confirmDelete() {
  const id = state.confirming;
  cancelDelete();
  const m = state.masks.find((x) => x.id === id);
  if (!m) return;
  try {
    await api(`/masks/${id}?version=${m.version}`, { method: "DELETE" });
  } catch (error) {
    status(error.status === 409 ? "someone changed this mask: reloaded" : error.message);
  }
  if (state.selected === id) resetPrompt();
  state.selected = null;
  await afterChange();
}

export function who() {
  return state.user ? state.user.name : $("author").value.trim();
}

// Whether this page's user makes review decisions (everyone in a single-user project).
function decides() {
  return !state.user || state.user.role !== "annotator";
}

function origin() {
  const prompted = state.prompt.points.length > 0 || state.prompt.box;
  if (state.brushed) return prompted ? "edited" : "brush";
  if (state.prompt.box && state.prompt.points.length === 0) return "box";
  return "clicks";
}

function sameBits(a, b) {
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

// Accept: a new mask is stored (unreviewed); a selected mask is accepted by the person named
// in the page, with its new shape and class if they changed.
export async function accept() {
  if (!state.image || !state.current || maskArea(state.current) === 0) {
    status("nothing to accept: click on an object first");
    return;
  }
  const seconds = (performance.now() - state.started) / 1000;
  const picked = state.picked;
  const selected = state.selected;
  try {
    if (state.editing) {
      const m = state.masks.find((x) => x.id === state.editing.id);
      if (!who()) throw new Error("type your name (top left) first: a review says who decided");
      const body = { version: state.editing.version, editor: who(),
        seconds: state.editing.seconds + seconds };
      if (decides()) Object.assign(body, { review: "accepted", reviewer: who() });
      if (!m || !sameBits(m.bits, state.current)) {
        body.rle = rleEncode(state.current, state.image.height, state.image.width);
      }
      if (!m || m.class_id !== picked) {
        if (picked === null) body.label = "";
        else body.class_id = picked;
      }
      await api(`/masks/${state.editing.id}`, { method: "PATCH", json: windowBody(body) });
      status(body.review ? `accepted${body.rle ? " with its edits" : ""}`
        : "saved; a reviewer decides whether it is accepted");
    } else {
      const output = state.outputs[state.choice];
      await api(`/images/${state.image.id}/masks`, {
        json: windowBody({
          rle: rleEncode(state.current, state.image.height, state.image.width),
          class_id: picked,
          author: who(),
          origin: origin(),
          prompts: { points: state.prompt.points, labels: state.prompt.labels,
            box: state.prompt.box },
          model_version: state.modelVersion,
          predicted_iou: output && !state.brushed ? output.score : null,
          seconds,
        }),
      });
      status(`accepted (${seconds.toFixed(1)} s)`);
    }
  } catch (error) {
    if (error.status === 409) {
      const what = error.body.current ? "edited" : "deleted";
      status(`not saved: someone ${what} this mask meanwhile; the list shows the current state`);
    } else {
      status(error.message);
    }
    return;
  }
  await afterDecision(selected);
}

// Reject the selected mask or proposal: kept (so a pre-fill does not propose it again), left
// out of exports.
export async function reject() {
  const m = state.masks.find((x) => x.id === state.selected);
  if (!m) {
    status("select a mask or proposal to reject");
    return;
  }
  if (!decides()) {
    status("rejecting is a reviewer's decision: delete the mask if it is yours and wrong");
    return;
  }
  if (!who()) {
    status("type your name (top left) first: a review says who decided");
    return;
  }
  const note = $("review-note").value.trim();
  try {
    await api(`/masks/${m.id}`, { method: "PATCH",
      json: windowBody({ version: m.version, review: "rejected", reviewer: who(), note }) });
    $("review-note").value = "";
    status(note ? `rejected: “${note}”` : "rejected");
  } catch (error) {
    status(error.message);
    return;
  }
  await afterDecision(m.id);
}

// Edit the selected mask: the brush on it (then `a` accepts it with the edits).
export function edit(setTool) {
  if (state.selected === null) selectNextPending(-1);
  if (state.selected === null) {
    status("nothing to edit: no mask is waiting for a decision");
    return;
  }
  setTool("brush");
  status("editing: paint (b) or erase (e), then accept (a)");
}

async function afterDecision(selected) {
  state.selected = null;
  resetPrompt();
  pickClass(null); // the class was this mask's: the next object starts without one
  await loadMasks();
  await imagesChanged();
  if (selected !== null) selectNextPending(selected);
  redraw();
}

export async function afterChange() {
  await loadMasks();
  await imagesChanged();
  redraw();
}
