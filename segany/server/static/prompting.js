// Prompts: clicks, boxes and hover decoded in the page (or by the server as a fallback), the
// previous low-res mask fed back, the 3 outputs of a first click, undo, brush and eraser.
// Zoomed into an image larger than the model's input (half of it or less in sight), a new
// object's clicks go to the server with the region in view, which answers them on tile
// embeddings at that scale (segany.tasks.regions): masks keep the detail the whole image's
// embedding loses. Its corrections follow it there with the frame its logits lie in.

import { rleDecode } from "./rle.js";
import { $, api, overlay, redraw, state, status, view } from "./state.js";
import { windowBody } from "./windows.js";

// ----- prompts and decoding -------------------------------------------------------------------
export function resetPrompt() {
  state.prompt = { points: [], labels: [], box: null };
  state.previous = null;
  state.previousFrame = null;
  state.outputs = [];
  state.choice = 0;
  state.current = null;
  state.brushed = false;
  state.editing = null;
  state.history = [];
  state.future = [];
  state.started = performance.now();
  $("mask-info").textContent = "";
}

// The prompt's state as undo and redo keep it.
function capture() {
  return {
    prompt: structuredClone(state.prompt),
    previous: state.previous,
    previousFrame: state.previousFrame,
    outputs: state.outputs,
    choice: state.choice,
    current: state.current && state.current.slice(),
    brushed: state.brushed,
  };
}

// Before each change: what undo returns to. A new change ends what redo could bring back.
export function snapshot() {
  state.history.push(capture());
  state.future = [];
}

export function undo() {
  const last = state.history.pop();
  if (!last) return;
  state.future.push(capture());
  restore(last);
}

export function redo() {
  const next = state.future.pop();
  if (!next) return;
  state.history.push(capture());
  restore(next);
}

// Back to a kept state as it was (its mask too, brush strokes included), with its output text.
function restore(kept) {
  Object.assign(state, kept);
  const output = state.outputs[state.choice];
  $("mask-info").textContent = output
    ? `output ${state.choice + 1}/${state.outputs.length} · IoU ${output.score.toFixed(3)}`
    : "";
  redraw();
}

// The image region in sight [x0, y0, x1, y1] when it warrants its own embedding: the image is
// larger than the model's input and at most half of its longer side is in view; else null.
export function regionInView() {
  if (!state.image || !state.embedding) return null;
  const { width: w, height: h } = state.image;
  const longest = Math.max(w, h);
  if (longest <= Math.max(...state.embedding.inputSize)) return null;
  const [x0, y0, x1, y1] = view.visible(w, h);
  if (x1 <= x0 || y1 <= y0 || 2 * Math.max(x1 - x0, y1 - y0) > longest) return null;
  return [x0, y0, x1, y1];
}

// where: "browser", "server" or undefined (the browser when it has the decoder); inView: the
// region in sight, sent with a server decode (null: none).
export async function decodeWith(prompt, multimask, where, inView = null) {
  const useBrowser = where === "browser" || (where === undefined && state.decoder);
  if (useBrowser) return state.decoder.run(state.embedding, prompt, multimask);
  const body = { multimask };
  if (inView) body.view = inView.map((v) => Math.round(v * 10) / 10);
  if (prompt.points.length) {
    body.points = prompt.points;
    body.labels = prompt.labels;
  }
  if (prompt.box) body.box = prompt.box;
  if (prompt.maskInput) {
    const s = Math.round(Math.sqrt(prompt.maskInput.length));
    const bytes = new Uint8Array(prompt.maskInput.buffer.slice(0));
    let binary = "";
    for (let i = 0; i < bytes.length; i++) binary += String.fromCharCode(bytes[i]);
    body.mask_input = { shape: [1, s, s], data: btoa(binary) };
    // A server that zooms corrections returns logits of a crop and needs to know which.
    if (prompt.maskFrame) body.mask_input_frame = prompt.maskFrame;
  }
  const { body: out } = await api(`/images/${state.image.id}/decode`, { json: windowBody(body) });
  const low = Uint8Array.from(atob(out.low_res_logits.data), (c) => c.charCodeAt(0));
  const logits = new Float32Array(low.buffer);
  const s = out.low_res_logits.shape[1] * out.low_res_logits.shape[2];
  return out.masks.map((rle, k) => ({
    // decoded when first read: on a large image only the output shown costs its H×W array
    get mask() {
      Object.defineProperty(this, "mask", { value: rleDecode(rle) });
      return this.mask;
    },
    score: out.scores[k],
    lowRes: logits.slice(k * s, (k + 1) * s),
    frame: out.logits_frame || null,
    region: inView !== null, // answered for a view: its corrections go back with one
  }));
}

async function decodePrompt() {
  if (!state.embedding) return;
  const prompt = { ...state.prompt, maskInput: state.previous, maskFrame: state.previousFrame };
  // The paper's loop: the first click gives 3 candidates; later clicks refine the chosen one.
  const multimask = !state.previous && !prompt.box && prompt.points.length === 1;
  // A new object zoomed in, or a correction of one answered on a region: the server's tiles.
  const region = regionInView();
  const last = state.previous ? state.outputs[state.choice] : null;
  const onRegion = (last && last.region) || (region && !state.previous);
  const inView = onRegion ? region || view.visible(state.image.width, state.image.height) : null;
  const outputs = await decodeWith(prompt, multimask, onRegion ? "server" : undefined, inView);
  state.decodes++;
  state.outputs = outputs;
  let best = 0;
  outputs.forEach((o, k) => {
    if (o.score > outputs[best].score) best = k;
  });
  state.choice = best;
  showChoice(true);
}

function showChoice(feed) {
  const output = state.outputs[state.choice];
  if (output) {
    if (feed) {
      state.previous = output.lowRes;
      state.previousFrame = output.frame || null;
    }
    state.current = output.mask.slice();
    const frame = output.frame;
    $("mask-info").textContent =
      `output ${state.choice + 1}/${state.outputs.length} · IoU ${output.score.toFixed(3)}${
        frame ? ` · region ${frame[2] - frame[0]}×${frame[3] - frame[1]} px` : ""}`;
  } else {
    // back to no output (an undo to an empty prompt): no mask, no stale output text
    $("mask-info").textContent = "";
    if (!state.editing && !state.brushed) state.current = null;
  }
  redraw();
}

export function cycle() {
  if (state.outputs.length < 2) return;
  snapshot();
  state.choice = (state.choice + 1) % state.outputs.length;
  state.previous = state.outputs[state.choice].lowRes;
  state.previousFrame = state.outputs[state.choice].frame || null;
  showChoice(false);
}

let hoverTimer = null;
function scheduleHover(x, y) {
  clearTimeout(hoverTimer);
  if (state.tool !== "point" || state.current || state.prompt.points.length || !state.embedding) {
    return;
  }
  hoverTimer = setTimeout(async () => {
    if (x < 0 || y < 0 || x >= state.image.width || y >= state.image.height) return;
    const outputs = await decodeWith({ points: [[x, y]], labels: [1], box: null }, true);
    let best = outputs[0];
    for (const o of outputs) if (o.score > best.score) best = o;
    if (!state.current && !state.prompt.points.length) {
      state.hover = best.mask;
      redraw();
    }
  }, state.decoder ? 40 : 250);
}

// ----- brush ----------------------------------------------------------------------------------
function paint(x, y, erase) {
  const { width: w, height: h } = state.image;
  if (!state.current) state.current = new Uint8Array(w * h);
  const r = state.brushRadius;
  for (let yy = Math.max(0, Math.floor(y - r)); yy <= Math.min(h - 1, y + r); yy++) {
    for (let xx = Math.max(0, Math.floor(x - r)); xx <= Math.min(w - 1, x + r); xx++) {
      if ((xx - x) ** 2 + (yy - y) ** 2 <= r * r) state.current[yy * w + xx] = erase ? 0 : 1;
    }
  }
  state.brushed = true;
}

// ----- canvas events --------------------------------------------------------------------------
let down = null;

const canvas = $("canvas");
canvas.addEventListener("contextmenu", (e) => e.preventDefault());
canvas.addEventListener("mousedown", (e) => {
  if (!state.image) return;
  const [x, y] = view.toImage(e);
  down = { x, y, button: e.button, shift: e.shiftKey };
  if (state.image.overview) return; // a large image's overview: a click opens a window
  if (state.tool !== "point") {
    snapshot();
    paint(x, y, state.tool === "erase");
    redraw();
  }
});
canvas.addEventListener("mousemove", (e) => {
  if (!state.image || state.image.overview) return;
  const [x, y] = view.toImage(e);
  if (state.tool !== "point") {
    overlay.brushAt = { x, y, radius: state.brushRadius, erase: state.tool === "erase" };
    if (down) paint(x, y, state.tool === "erase");
    redraw();
    return;
  }
  if (down && Math.hypot((x - down.x) * view.scale, (y - down.y) * view.scale) > 6) {
    overlay.drag = [
      Math.min(down.x, x), Math.min(down.y, y), Math.max(down.x, x), Math.max(down.y, y),
    ];
    redraw();
    return;
  }
  scheduleHover(x, y);
});
canvas.addEventListener("mouseleave", () => {
  overlay.brushAt = null;
  clearTimeout(hoverTimer);
  state.hover = null;
  redraw();
});
window.addEventListener("mouseup", async (e) => {
  if (!down || !state.image) return;
  const start = down;
  down = null;
  if (state.image.overview) {
    const [x, y] = view.toImage(e);
    const inside = x >= 0 && y >= 0 && x < state.image.width && y < state.image.height;
    if (inside && Math.hypot((x - start.x) * view.scale, (y - start.y) * view.scale) <= 6) {
      await state.onOverviewClick(x, y);
    }
    return;
  }
  if (state.tool !== "point") return;
  const clip = (v, hi) => Math.min(Math.max(v, 0), hi - 1);
  snapshot();
  if (overlay.drag) {
    const [x0, y0, x1, y1] = overlay.drag;
    const { width: w, height: h } = state.image;
    state.prompt.box = [clip(x0, w), clip(y0, h), clip(x1, w), clip(y1, h)];
    overlay.drag = null;
  } else {
    const [x, y] = view.toImage(e);
    if (x < 0 || y < 0 || x >= state.image.width || y >= state.image.height) {
      state.history.pop();
      return;
    }
    const negative = start.button === 2 || start.shift;
    state.prompt.points.push([Math.round(x * 10) / 10, Math.round(y * 10) / 10]);
    state.prompt.labels.push(negative ? 0 : 1);
  }
  state.hover = null;
  try {
    await decodePrompt();
  } catch (error) {
    status(error.message);
  }
});
