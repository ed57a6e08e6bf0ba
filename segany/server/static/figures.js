// The data engine's figures (GET /api/stats): per model version, the assisted-manual stage's
// masks per image and seconds per mask, and what became of the pre-fill's proposals; a small
// bar chart of seconds per mask by version. The JSON is linked for export.

import { $, api } from "./state.js";

const fmt = (v, digits = 1) => (v === null || v === undefined ? "–" : v.toFixed(digits));

export async function showFigures() {
  const { body } = await api("/stats");
  const rows = body.versions.map((v) => {
    const manual = v.stages["assisted-manual"];
    const semi = v.stages["semi-automatic"];
    return [
      v.model_version === null ? "–" : `v${v.model_version}`,
      `${manual.masks}`,
      fmt(manual.seconds_per_mask),
      fmt(v.masks_per_image),
      `${semi.kept}/${semi.edited}/${semi.rejected}`,
      `${Math.round(100 * v.share_from_model)}%`,
    ];
  });
  const table = $("figures-table");
  table.replaceChildren();
  const head = ["model", "manual", "s/mask", "masks/img", "kept/edited/rej.", "model"];
  for (const cells of [head, ...rows]) {
    const tr = document.createElement("tr");
    for (const text of cells) {
      const td = document.createElement(cells === head ? "th" : "td");
      td.textContent = text;
      tr.append(td);
    }
    table.append(tr);
  }
  drawChart(body.versions.filter((v) => v.model_version !== null));
  document.body.dataset.figures = String(body.total.masks);
}

function drawChart(versions) {
  const canvas = $("figures-chart");
  const ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  const values = versions.map((v) => v.stages["assisted-manual"].seconds_per_mask || 0);
  const top = Math.max(1, ...values);
  const w = canvas.width / Math.max(1, values.length);
  ctx.font = "10px system-ui";
  values.forEach((value, k) => {
    const h = ((canvas.height - 24) * value) / top;
    ctx.fillStyle = "#4caf50";
    ctx.fillRect(k * w + 4, canvas.height - 12 - h, w - 8, h);
    ctx.fillStyle = "#ccc";
    ctx.fillText(`v${versions[k].model_version}: ${fmt(value)} s`, k * w + 4, canvas.height - 2);
  });
}
