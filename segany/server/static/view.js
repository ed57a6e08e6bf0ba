// Drawing: the image fitted to the stage, masks as coloured overlays at image resolution,
// prompts (points, box) and the brush on top. Coordinates in the page's state are image pixels.

const PALETTE = [
  [230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48],
  [145, 30, 180], [70, 240, 240], [240, 50, 230], [210, 245, 60], [250, 190, 212],
  [0, 128, 128], [220, 190, 255], [170, 110, 40], [255, 250, 200], [128, 0, 0],
];

export function colorOf(id) {
  return PALETTE[id % PALETTE.length];
}

export class View {
  constructor(canvas) {
    this.canvas = canvas;
    this.ctx = canvas.getContext("2d");
    this.layer = document.createElement("canvas"); // saved masks, image resolution
    this.live = document.createElement("canvas"); // hover + current mask, image resolution
    this.scale = 1;
    this.dx = 0;
    this.dy = 0;
  }

  fit(image) {
    const rect = this.canvas.getBoundingClientRect();
    this.canvas.width = Math.max(1, Math.round(rect.width));
    this.canvas.height = Math.max(1, Math.round(rect.height));
    if (!image) return;
    const w = image.naturalWidth;
    const h = image.naturalHeight;
    for (const c of [this.layer, this.live]) {
      c.width = w;
      c.height = h;
    }
    this.home(image);
  }

  // The whole image in view, centred (what fit gives; Home in the page).
  home(image) {
    if (!image) return;
    const w = image.naturalWidth;
    const h = image.naturalHeight;
    this.fitted = Math.min(this.canvas.width / w, this.canvas.height / h);
    this.scale = this.fitted;
    this.dx = (this.canvas.width - w * this.scale) / 2;
    this.dy = (this.canvas.height - h * this.scale) / 2;
  }

  // Zoom by `factor` about the canvas point (cx, cy): the image pixel under it stays there.
  // The scale stays between half the fitted one and 32 screen pixels per image pixel.
  zoomAt(factor, cx, cy) {
    const scale = Math.min(32, Math.max((this.fitted || this.scale) / 2, this.scale * factor));
    const k = scale / this.scale;
    this.dx = cx - (cx - this.dx) * k;
    this.dy = cy - (cy - this.dy) * k;
    this.scale = scale;
  }

  panBy(dx, dy) {
    this.dx += dx;
    this.dy += dy;
  }

  // Client (page) coordinates of image pixel (x, y): what a click there sends.
  toClient(x, y) {
    const rect = this.canvas.getBoundingClientRect();
    return [rect.left + this.dx + x * this.scale, rect.top + this.dy + y * this.scale];
  }

  // The part of a w×h image in sight, as image pixels [x0, y0, x1, y1].
  visible(w, h) {
    return [
      Math.max(0, -this.dx / this.scale),
      Math.max(0, -this.dy / this.scale),
      Math.min(w, (this.canvas.width - this.dx) / this.scale),
      Math.min(h, (this.canvas.height - this.dy) / this.scale),
    ];
  }

  toImage(event) {
    const rect = this.canvas.getBoundingClientRect();
    const x = (event.clientX - rect.left - this.dx) / this.scale;
    const y = (event.clientY - rect.top - this.dy) / this.scale;
    return [x, y];
  }

  // masks: [{id, bits, review}]; color(m) -> [r, g, b] (its class's colour). Proposals are
  // fainter than masks; the selected one is the most opaque.
  paintMasks(masks, hidden, selected, w, h, color = (m) => colorOf(m.id)) {
    const ctx = this.layer.getContext("2d");
    const data = ctx.createImageData(w, h);
    const px = data.data;
    for (const m of masks) {
      if (hidden.has(m.id)) continue;
      const [r, g, b] = color(m);
      const a = m.id === selected ? 200 : m.review === "proposed" ? 70 : 110;
      const bits = m.bits;
      for (let i = 0; i < bits.length; i++) {
        if (!bits[i]) continue;
        const j = 4 * i;
        px[j] = r;
        px[j + 1] = g;
        px[j + 2] = b;
        px[j + 3] = a;
      }
    }
    ctx.putImageData(data, 0, 0);
  }

  paintLive(hover, current, w, h) {
    const ctx = this.live.getContext("2d");
    const data = ctx.createImageData(w, h);
    const px = data.data;
    const put = (bits, r, g, b, a) => {
      for (let i = 0; i < bits.length; i++) {
        if (!bits[i]) continue;
        const j = 4 * i;
        px[j] = r;
        px[j + 1] = g;
        px[j + 2] = b;
        px[j + 3] = a;
      }
    };
    if (hover && !current) put(hover, 255, 255, 255, 90);
    if (current) put(current, 30, 144, 255, 150);
    ctx.putImageData(data, 0, 0);
  }

  // boxes: [{bbox: [x, y, w, h] image pixels, color: [r, g, b]}] outlined (a large image's
  // overview shows its masks so).
  draw(image, prompt, drag, brush, boxes = []) {
    const ctx = this.ctx;
    ctx.clearRect(0, 0, this.canvas.width, this.canvas.height);
    if (!image) return;
    const w = image.naturalWidth * this.scale;
    const h = image.naturalHeight * this.scale;
    ctx.imageSmoothingEnabled = true;
    ctx.drawImage(image, this.dx, this.dy, w, h);
    ctx.imageSmoothingEnabled = false; // mask pixels stay crisp when scaled up
    ctx.drawImage(this.layer, this.dx, this.dy, w, h);
    ctx.drawImage(this.live, this.dx, this.dy, w, h);
    const sx = (x) => this.dx + x * this.scale;
    const sy = (y) => this.dy + y * this.scale;
    ctx.lineWidth = 2;
    for (const { bbox, color } of boxes) {
      ctx.strokeStyle = `rgb(${color.join(",")})`;
      ctx.strokeRect(sx(bbox[0]), sy(bbox[1]), (bbox[2] + 1) * this.scale, (bbox[3] + 1) * this.scale);
    }
    const box = drag || prompt.box;
    if (box) {
      ctx.strokeStyle = "#1e90ff";
      ctx.lineWidth = 2;
      ctx.strokeRect(sx(box[0]), sy(box[1]), (box[2] - box[0]) * this.scale,
        (box[3] - box[1]) * this.scale);
    }
    prompt.points.forEach((p, i) => {
      ctx.beginPath();
      ctx.arc(sx(p[0]), sy(p[1]), 5, 0, 2 * Math.PI);
      ctx.fillStyle = prompt.labels[i] ? "#22dd55" : "#ff3344";
      ctx.fill();
      ctx.strokeStyle = "#fff";
      ctx.lineWidth = 1.5;
      ctx.stroke();
    });
    if (brush) {
      ctx.beginPath();
      ctx.arc(sx(brush.x), sy(brush.y), brush.radius * this.scale, 0, 2 * Math.PI);
      ctx.strokeStyle = brush.erase ? "#ff3344" : "#22dd55";
      ctx.lineWidth = 1;
      ctx.stroke();
    }
  }
}
