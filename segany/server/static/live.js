// Live updates: the server's event stream (GET /api/events) tells the page of every change to
// masks, images and classes, whoever made it; the page reloads what it shows (at most every
// 150 ms per kind, so a pre-fill's burst is one reload). EventSource reconnects by itself.

import { loadClasses } from "./classes.js";
import { loadMasks } from "./masks.js";
import { redraw, state, status } from "./state.js";

const pending = new Map();

function soon(key, action) {
  if (pending.has(key)) return;
  pending.set(key, setTimeout(async () => {
    pending.delete(key);
    try {
      await action();
      redraw();
    } catch (error) { // the database away (503), signed out meanwhile (401): say so
      status(error.message);
    }
  }, 150));
}

export function listen(loadImages, loadModel) {
  if (typeof EventSource === "undefined") return;
  const source = new EventSource("/api/events", { withCredentials: true });
  const reloadMasks = () => state.image && loadMasks();
  source.addEventListener("open", () => { document.body.dataset.live = "1"; });
  source.addEventListener("mask", (e) => {
    state.liveEvents++;
    const data = JSON.parse(e.data);
    if (state.image && data.image_id === state.image.id) soon("masks", reloadMasks);
    soon("images", loadImages);
  });
  source.addEventListener("image", () => {
    state.liveEvents++;
    soon("images", loadImages);
  });
  source.addEventListener("classes", () => {
    state.liveEvents++;
    soon("classes", async () => {
      await loadClasses();
      await reloadMasks();
    });
  });
  source.addEventListener("model", () => {
    state.liveEvents++;
    soon("model", loadModel);
  });
  source.addEventListener("reload", () => {
    soon("classes", loadClasses);
    soon("masks", reloadMasks);
    soon("images", loadImages);
  });
  return source;
}
