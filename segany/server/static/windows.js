// Large images: more pixels than the project works on at once (GET /api/project's max_pixels)
// are worked on by windows (segany.server.windows). Such an image opens as an overview (the
// image shrunk, its masks shrunk with it and their boxes drawn on it); a click there opens the window that holds
// that point most centrally, which the page then treats as its image: its pixels, its
// embedding, its masks cut to it, prompts in its pixels. Every call about the image names the
// window (`withWindow`, `windowBody`); the server pastes saved masks into the image there.
// The windows are the server's grid (GET /api/images/ID/windows: tiles of the whole image,
// the grid its zoomed clicks are answered on too); the arrows step to the next one.

import { state } from "./state.js";

const OVERVIEW_SIDE = 2048; // the overview's longer side, at most (px)
const WINDOW_SIDE = 4096; // a window's side, at most (px; and within max_pixels)

export function isLarge(image) {
  return state.maxPixels > 0 && image.width * image.height > state.maxPixels;
}

// The whole factor the overview shrinks the image by: its longer side within OVERVIEW_SIDE and
// its pixels within max_pixels.
export function overviewScale(image) {
  const byside = Math.ceil(Math.max(image.width, image.height) / OVERVIEW_SIDE);
  const bypixels = Math.ceil(Math.sqrt((image.width * image.height) / state.maxPixels));
  return Math.max(1, byside, bypixels);
}

// The grid window (state.grid) that holds image pixel (x, y) with the widest margin, or the
// one (dx, dy) steps from it; without a grid, the window centred on (x, y) in the image.
export function windowAround(full, x, y, dx = 0, dy = 0) {
  const grid = state.grid;
  if (grid && grid.x.length && grid.y.length) {
    const pick = (starts, at, length, step) => {
      const margin = (s) => Math.min(at - s, Math.min(length, s + grid.side) - at);
      let best = 0;
      starts.forEach((s, i) => { if (margin(s) > margin(starts[best])) best = i; });
      return starts[Math.min(starts.length - 1, Math.max(0, best + step))];
    };
    const x0 = pick(grid.x, x, full.width, dx);
    const y0 = pick(grid.y, y, full.height, dy);
    return [x0, y0, Math.min(full.width, x0 + grid.side), Math.min(full.height, y0 + grid.side)];
  }
  const side = Math.min(WINDOW_SIDE, Math.floor(Math.sqrt(state.maxPixels)));
  const w = Math.min(side, full.width);
  const h = Math.min(side, full.height);
  const x0 = Math.min(Math.max(0, Math.round(x - w / 2)), full.width - w);
  const y0 = Math.min(Math.max(0, Math.round(y - h / 2)), full.height - h);
  return [x0, y0, x0 + w, y0 + h];
}

// The page's image in overview: the image row with the overview's size.
export function overviewImage(full) {
  const scale = overviewScale(full);
  return {
    ...full,
    width: Math.ceil(full.width / scale),
    height: Math.ceil(full.height / scale),
    url: `${full.url}?scale=${scale}`,
    overview: scale,
  };
}

// The page's image in a window: the image row with the window's size.
export function windowImage(full, win) {
  return {
    ...full,
    width: win[2] - win[0],
    height: win[3] - win[1],
    url: `${full.url}?window=${win.join(",")}`,
    window: win,
  };
}

// An API path about the current image, with its window when one is open.
export function withWindow(path) {
  if (!state.window) return path;
  return `${path}${path.includes("?") ? "&" : "?"}window=${state.window.join(",")}`;
}

// A JSON body about the current image, with its window when one is open.
export function windowBody(json) {
  return state.window ? { ...json, window: state.window } : json;
}

// Where the window is, for the bar above the canvas.
export function windowText() {
  if (!state.full) return "";
  const { width, height } = state.full;
  if (!state.window) {
    return `${width}×${height} px, shown ${state.image.overview}× smaller: click where to work`;
  }
  const [x0, y0, x1, y1] = state.window;
  return `window x ${x0}–${x1}, y ${y0}–${y1} of ${width}×${height}`;
}
