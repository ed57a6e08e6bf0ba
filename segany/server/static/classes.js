// The project's label set in the page: the class list (number keys 1-9 pick, 0 picks none),
// adding a class by name, renaming (double click) and recolouring (the swatch). The picked
// class goes with the next accepted mask and is dropped after it, so it cannot leak onto the
// next object; selecting a mask shows its class.

import { $, api, state, status } from "./state.js";

let changed = async () => {}; // the page reloads masks and repaints when a class changes

export function onClassesChanged(fn) {
  changed = fn;
}

export async function loadClasses() {
  const { body } = await api("/classes");
  state.classes = body;
  renderClasses();
}

export function classOf(id) {
  return state.classes.find((c) => c.id === id) || null;
}

export function rgbOf(hex) {
  const v = parseInt(hex.slice(1), 16);
  return [(v >> 16) & 255, (v >> 8) & 255, v & 255];
}

export function pickClass(id) {
  state.picked = id === null || classOf(id) ? id : null;
  renderClasses();
}

// Number key n: the n-th class (1-9), or none (0).
export function pickByKey(n) {
  if (n === 0) pickClass(null);
  else if (state.classes[n - 1]) pickClass(state.classes[n - 1].id);
  else status(`there is no class ${n}: add one below the list`);
}

// The class named `name` (ignoring case), added if new; it becomes the picked class.
export async function useClass(name) {
  const wanted = name.trim();
  if (!wanted) return null;
  let found = state.classes.find((c) => c.name.toLowerCase() === wanted.toLowerCase());
  if (!found) {
    try {
      ({ body: found } = await api("/classes", { json: { name: wanted } }));
    } catch (error) {
      status(error.message);
      return null;
    }
    await loadClasses();
  }
  pickClass(found.id);
  return found;
}

async function update(id, changes) {
  try {
    await api(`/classes/${id}`, { method: "PATCH", json: changes });
  } catch (error) {
    status(error.message);
  }
  await loadClasses();
  await changed();
}

export function renderClasses() {
  const list = $("class-list");
  list.replaceChildren();
  state.classes.forEach((c, k) => {
    const li = document.createElement("li");
    li.dataset.id = c.id;
    li.className = c.id === state.picked ? "picked" : "";
    const key = document.createElement("span");
    key.className = "key";
    key.textContent = k < 9 ? String(k + 1) : "";
    const swatch = document.createElement("input");
    swatch.type = "color";
    swatch.value = c.color;
    swatch.title = "colour";
    swatch.onchange = () => update(c.id, { color: swatch.value });
    const name = document.createElement("span");
    name.className = "name";
    name.textContent = c.name;
    name.title = `${c.masks} masks · double click to rename`;
    name.ondblclick = () => {
      const value = window.prompt(`Rename the class ${c.name}`, c.name);
      if (value && value.trim() && value.trim() !== c.name) update(c.id, { name: value.trim() });
    };
    li.append(key, swatch, name);
    li.onclick = (e) => {
      if (e.target !== swatch) pickClass(c.id === state.picked ? null : c.id);
    };
    list.append(li);
  });
  const picked = classOf(state.picked);
  $("class-picked").textContent = picked ? `class: ${picked.name}` : "class: none";
}
