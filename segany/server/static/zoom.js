// Zoom and pan: the wheel zooms about the cursor, space + drag (or the middle button) pans,
// + / - zoom about the centre, the arrow keys pan, Home shows the whole image. Prompts and
// masks stay in image pixels (view.toImage), so clicks, boxes and the brush work at any zoom.

import { $, redraw, state, view } from "./state.js";

const canvas = $("canvas");
let space = false;
let pan = null; // the last pointer position of a pan in progress

canvas.addEventListener("wheel", (e) => {
  if (!state.image) return;
  e.preventDefault();
  const rect = canvas.getBoundingClientRect();
  view.zoomAt(Math.exp(-e.deltaY * 0.0015), e.clientX - rect.left, e.clientY - rect.top);
  redraw();
}, { passive: false });

window.addEventListener("keydown", (e) => {
  if (e.key !== " " || e.target.tagName === "INPUT" || e.target.tagName === "SELECT") return;
  space = true;
  canvas.style.cursor = "grab";
  e.preventDefault();
}, true);
window.addEventListener("keyup", (e) => {
  if (e.key !== " ") return;
  space = false;
  canvas.style.cursor = "";
});

// Capture listeners: a pan's events never reach the prompt and brush handlers.
canvas.addEventListener("mousedown", (e) => {
  if (!state.image || !(space || e.button === 1)) return;
  pan = { x: e.clientX, y: e.clientY };
  e.preventDefault();
  e.stopImmediatePropagation();
}, true);
window.addEventListener("mousemove", (e) => {
  if (!pan) return;
  view.panBy(e.clientX - pan.x, e.clientY - pan.y);
  pan = { x: e.clientX, y: e.clientY };
  e.stopPropagation();
  redraw();
}, true);
window.addEventListener("mouseup", (e) => {
  if (!pan) return;
  pan = null;
  e.stopPropagation();
}, true);

const STEP = 60; // screen pixels per arrow key

// The zoom keys' actions, for the page's keyboard table.
export const zoomKeys = {
  "+": () => zoomCentre(1.25),
  "=": () => zoomCentre(1.25),
  "-": () => zoomCentre(0.8),
  Home: () => view.home(state.element),
  ArrowLeft: () => view.panBy(STEP, 0),
  ArrowRight: () => view.panBy(-STEP, 0),
  ArrowUp: () => view.panBy(0, STEP),
  ArrowDown: () => view.panBy(0, -STEP),
};

function zoomCentre(factor) {
  view.zoomAt(factor, canvas.width / 2, canvas.height / 2);
}
