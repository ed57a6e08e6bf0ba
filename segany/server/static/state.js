// Shared by the page's modules: the state, the element lookup, the API call, the view.

import { View } from "./view.js";

export const $ = (id) => document.getElementById(id);
export const view = new View($("canvas"));
export const overlay = { drag: null, brushAt: null }; // what the canvas draws above the masks

export const state = {
  images: [],
  image: null, // {id, width, height, status, ...}: a large image's overview or window (windows.js)
  full: null, // a large image's own row, while its overview or a window is open (else null)
  window: null, // [x0, y0, x1, y1]: the large image's window open (null: none)
  grid: null, // {side, overlap, x, y}: the large image's windows (GET /api/images/ID/windows)
  maxPixels: 0, // the pixels the project works on at once (GET /api/project)
  overviewBoxes: [], // the masks' boxes drawn on a large image's overview: [{bbox, color}]
  overviewMasks: [], // the masks drawn on a large image's overview, shrunk with it (bits)
  onOverviewClick: null, // (x, y) -> a window opened there (set by app.js)
  element: null, // the HTMLImageElement
  embedding: null, // {data, shape, inputSize, originalSize}
  decoder: null, // BrowserDecoder or null (then the server decodes)
  modelVersion: 0,
  prompt: { points: [], labels: [], box: null },
  previous: null, // low-res logits of the chosen output, fed back on the next click
  previousFrame: null, // the crop those logits lie in, when the server zoomed (else null)
  outputs: [],
  choice: 0,
  current: null, // the mask being made: Uint8Array(H*W)
  hover: null,
  brushed: false,
  editing: null, // a saved mask being edited: {id, version, seconds}
  masks: [],
  classes: [], // the project's label set: [{id, name, color, masks}]
  picked: null, // the class id the next accepted mask gets (null: none)
  prefill: null, // the thresholds a pre-fill without any uses (the model's own)
  hidden: new Set(),
  selected: null,
  tool: "point",
  brushRadius: 8,
  history: [], // undo: the prompt's earlier states
  future: [], // redo: the states undo went back from
  user: null, // the signed-in user of a team project ({id, name, role}); null: single-user
  confirming: null, // the mask a delete waits to be confirmed for
  started: performance.now(),
  decodes: 0,
  liveEvents: 0, // changes the server told of (live.js)
};

export function status(text) {
  $("status").textContent = text;
}

export async function api(path, options = {}) {
  const init = { credentials: "same-origin", ...options };
  if (options.json !== undefined) {
    init.method = init.method || "POST";
    init.headers = { "content-type": "application/json" };
    init.body = JSON.stringify(options.json);
  }
  const response = await fetch(`/api${path}`, init);
  if (response.status === 204) return null;
  const body = response.headers.get("content-type")?.includes("json")
    ? await response.json()
    : await response.arrayBuffer();
  if (!response.ok) {
    const error = new Error(body.detail || `HTTP ${response.status}`);
    error.status = response.status;
    error.body = body;
    throw error;
  }
  return { body, headers: response.headers };
}


export function redraw() {
  if (state.image) {
    view.paintLive(state.hover, state.current, state.image.width, state.image.height);
  }
  view.draw(state.element, state.prompt, overlay.drag, overlay.brushAt,
    state.image?.overview ? state.overviewBoxes : []);
}
