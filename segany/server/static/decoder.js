// The prompt decoder in the browser: onnxruntime-web (WebAssembly, served by segany) running
// the ONNX export of the current model's decoder on the embedding the server computed.
// Inputs and outputs follow the official web demo's interface (see segany.export.decoder);
// the export keeps all 4 mask tokens: 0 is the single-mask output, 1-3 the multimask ones.
//
// An image larger than the encoder's input (a 24 MP photo: 6000×4000 against 1024×683) is not
// decoded at its own size: the decoder is asked for its logits at the input size (its last
// resize is then the identity) and the page makes the full-size mask of an output only when it
// is used, with the same bilinear resize (half-pixel centres, as torch's align_corners=False)
// the decoder would have made. A click then costs what it costs on a 1024-px image, and no
// 4×H×W float output is held.
//
// SAM-HQ: the export (segany.export.decoder_hq) also takes interm_embeddings, the encoder's
// early map the server sends beside the embedding (/api/images/ID/early: 1×64×64×768 floats,
// 12.6 MB, for sam_hq_vit_b), and answers with every token: SAM's single mask, its 3 multimask
// ones and the HQ mask. The page answers as SAM-HQ (and the server) do: one mask, SAM's single
// output or its best-scored multimask one, plus the HQ mask, with that SAM output's score.
//
// SAM 2 / 2.1: the export (segany.export.decoder_sam2) also takes high_res_feats_0/1, the two
// high-resolution maps the server sends beside the embedding (/api/images/ID/high_res:
// 1×32×256×256 and 1×64×128×128 floats, 12.6 MB, for the released models), with prompts as
// SAM 2 takes them: in the S×S frame the image is stretched to (x·S/W, y·S/H: what the scale
// below gives, since the input size is S×S), a box's corners first, then the clicks, then
// always one padding point. Its masks are the low-res logits resized once to the image's size
// (on a large image the page asks for them at the low-res size, the identity, and resizes them
// itself); without multimask the answer is SAM 2's single mask (token 0 where its stability
// reaches the model's threshold, else the best-scored multimask one), and the low-res logits
// are clamped to [-32, 32], as the server's decode answers.
// A decoder with other inputs the page cannot feed is refused at load, so the page decodes on
// the server.

/* global ort */

export class BrowserDecoder {
  constructor(session) {
    this.session = session;
  }

  static async load(url) {
    if (typeof ort === "undefined") throw new Error("onnxruntime-web did not load");
    ort.env.wasm.wasmPaths = "/static/ort/";
    ort.env.wasm.numThreads = 1; // no cross-origin isolation: no shared memory for threads
    const response = await fetch(url, { credentials: "same-origin" });
    if (!response.ok) throw new Error(`decoder: HTTP ${response.status}`);
    const bytes = new Uint8Array(await response.arrayBuffer());
    const session = await ort.InferenceSession.create(bytes, { executionProviders: ["wasm"] });
    const unknown = session.inputNames.filter((name) => !FED.includes(name));
    if (unknown.length) {
      throw new Error(`the page cannot feed the decoder's ${unknown.join(", ")}`);
    }
    return new BrowserDecoder(session);
  }

  // Whether the decoder reads the early map (SAM-HQ): emb.early must then be given.
  get needsEarly() {
    return this.session.inputNames.includes("interm_embeddings");
  }

  // Whether the decoder is SAM 2's, reading its two high-resolution maps: emb.highRes must
  // then be given.
  get needsHighRes() {
    return this.session.inputNames.includes("high_res_feats_0");
  }

  // emb: {data Float32Array, shape [1,C,h,w], inputSize [h',w'], originalSize [H,W],
  //       early {data Float32Array, shape [1,h,w,E]} (SAM-HQ only),
  //       highRes {maps [{data, shape}, {data, shape}], stability [delta, threshold]} (SAM 2)}
  // prompt: {points [[x,y]...], labels [1|0...], box [x0,y0,x1,y1]|null, maskInput Float32Array|null}
  // Returns [{mask Uint8Array(H*W), score, lowRes Float32Array(s*s)}] (3 with multimask, else 1;
  // SAM-HQ: 1).
  async run(emb, prompt, multimask) {
    if (this.needsHighRes) return this.runSam2(emb, prompt, multimask);
    const [H, W] = emb.originalSize;
    const [ih, iw] = emb.inputSize;
    const large = H * W > ih * iw;
    const [oh, ow] = large ? [ih, iw] : [H, W]; // the size the decoder answers in
    const sx = iw / W; // the Predictor's resize-longest-side scale, per axis
    const sy = ih / H;
    const coords = [];
    const labels = [];
    prompt.points.forEach((p, i) => {
      coords.push(p[0] * sx, p[1] * sy);
      labels.push(prompt.labels[i]);
    });
    if (prompt.box) {
      const b = prompt.box;
      coords.push(b[0] * sx, b[1] * sy, b[2] * sx, b[3] * sy);
      labels.push(2, 3);
    } else {
      coords.push(0, 0); // the not-a-point token the model adds when no box is given
      labels.push(-1);
    }
    const n = labels.length;
    const s = emb.shape[2] * 4;
    const hasMask = prompt.maskInput ? 1 : 0;
    const feeds = {
      image_embeddings: new ort.Tensor("float32", emb.data, emb.shape),
      point_coords: new ort.Tensor("float32", Float32Array.from(coords), [1, n, 2]),
      point_labels: new ort.Tensor("float32", Float32Array.from(labels), [1, n]),
      mask_input: new ort.Tensor("float32", prompt.maskInput || new Float32Array(s * s), [
        1, 1, s, s,
      ]),
      has_mask_input: new ort.Tensor("float32", Float32Array.from([hasMask]), [1]),
      orig_im_size: new ort.Tensor("float32", Float32Array.from([oh, ow]), [2]),
    };
    if (this.needsEarly) {
      if (!emb.early) throw new Error("a SAM-HQ decoder needs the image's early map");
      // K×1×h×w×E with K = 1: the early map is the only one SAM-HQ's decoder reads
      feeds.interm_embeddings = new ort.Tensor("float32", emb.early.data, [1, ...emb.early.shape]);
    }
    const out = await this.session.run(feeds);
    const masks = out.masks.data;
    const scores = out.iou_predictions.data;
    const low = out.low_res_masks.data;
    let picks = multimask ? [1, 2, 3] : [0];
    let hq = null; // SAM-HQ: the HQ mask's token, added to the chosen SAM output
    if (this.needsEarly) {
      hq = scores.length; // masks: SAM's single, its multimask ones, then the HQ mask
      picks = [picks.reduce((best, k) => (scores[k] > scores[best] ? k : best))];
    }
    const slice = (data, k, n) => {
      const part = data.slice(k * n, (k + 1) * n);
      if (hq !== null) for (let i = 0; i < n; i++) part[i] += data[hq * n + i];
      return part;
    };
    return picks.map((k) => {
      const lowRes = slice(low, k, s * s);
      if (large) {
        const logits = slice(masks, k, oh * ow);
        return new LazyOutput(logits, oh, ow, H, W, scores[k], lowRes);
      }
      if (hq !== null) {
        const logits = slice(masks, k, H * W);
        return { mask: Uint8Array.from(logits, (v) => (v > 0 ? 1 : 0)), score: scores[k], lowRes };
      }
      const mask = new Uint8Array(H * W);
      const offset = k * H * W;
      for (let i = 0; i < H * W; i++) mask[i] = masks[offset + i] > 0 ? 1 : 0;
      return { mask, score: scores[k], lowRes };
    });
  }

  // SAM 2's decode (see the top of the file); returns what run does.
  async runSam2(emb, prompt, multimask) {
    if (!emb.highRes) throw new Error("a SAM 2 decoder needs the image's high-resolution maps");
    const [H, W] = emb.originalSize;
    const [ih, iw] = emb.inputSize; // S×S: the image is stretched to it
    const sx = iw / W;
    const sy = ih / H;
    const coords = [];
    const labels = [];
    if (prompt.box) {
      const b = prompt.box;
      coords.push(b[0] * sx, b[1] * sy, b[2] * sx, b[3] * sy);
      labels.push(2, 3);
    }
    prompt.points.forEach((p, i) => {
      coords.push(p[0] * sx, p[1] * sy);
      labels.push(prompt.labels[i]);
    });
    coords.push(0, 0); // SAM 2 always ends with one padding point
    labels.push(-1);
    const n = labels.length;
    const s = emb.shape[2] * 4;
    const large = H * W > ih * iw;
    const [oh, ow] = large ? [s, s] : [H, W]; // at s×s the decoder's resize is the identity
    const [map0, map1] = emb.highRes.maps;
    const feeds = {
      image_embeddings: new ort.Tensor("float32", emb.data, emb.shape),
      high_res_feats_0: new ort.Tensor("float32", map0.data, map0.shape),
      high_res_feats_1: new ort.Tensor("float32", map1.data, map1.shape),
      point_coords: new ort.Tensor("float32", Float32Array.from(coords), [1, n, 2]),
      point_labels: new ort.Tensor("float32", Float32Array.from(labels), [1, n]),
      mask_input: new ort.Tensor("float32", prompt.maskInput || new Float32Array(s * s), [
        1, 1, s, s,
      ]),
      has_mask_input: new ort.Tensor("float32", Float32Array.from([prompt.maskInput ? 1 : 0]), [
        1,
      ]),
      orig_im_size: new ort.Tensor("float32", Float32Array.from([oh, ow]), [2]),
    };
    const out = await this.session.run(feeds);
    const masks = out.masks.data;
    const scores = out.iou_predictions.data;
    const low = out.low_res_masks.data;
    const picks = multimask ? [1, 2, 3] : [sam2Single(low, scores, s * s, emb.highRes.stability)];
    return picks.map((k) => {
      const lowRes = low.slice(k * s * s, (k + 1) * s * s);
      const logits = masks.slice(k * oh * ow, (k + 1) * oh * ow);
      for (let i = 0; i < lowRes.length; i++) lowRes[i] = Math.min(32, Math.max(-32, lowRes[i]));
      if (large) return new LazyOutput(logits, oh, ow, H, W, scores[k], lowRes);
      return { mask: Uint8Array.from(logits, (v) => (v > 0 ? 1 : 0)), score: scores[k], lowRes };
    });
  }
}

// SAM 2's single answer among every token's low-res logits (K×n, n = s·s) and scores (K):
// token 0 where its stability (the area above +delta over the area above -delta, 1 when
// empty; float32 as the model computes it) reaches the threshold, else the multimask token
// with the highest score (MaskDecoderSAM2.stable_single).
function sam2Single(low, scores, n, [delta, threshold]) {
  const up = Math.fround(delta);
  const down = Math.fround(-delta);
  let inner = 0;
  let outer = 0;
  for (let i = 0; i < n; i++) {
    if (low[i] > up) inner++;
    if (low[i] > down) outer++;
  }
  const stability = outer > 0 ? Math.fround(inner / outer) : 1;
  if (stability >= Math.fround(threshold)) return 0;
  let best = 1;
  for (let k = 2; k < scores.length; k++) if (scores[k] > scores[best]) best = k;
  return best;
}

// What the page can feed a decoder: the official web demo's inputs, SAM-HQ's early map and
// SAM 2's high-resolution maps.
const FED = [
  "image_embeddings",
  "interm_embeddings",
  "high_res_feats_0",
  "high_res_feats_1",
  "point_coords",
  "point_labels",
  "mask_input",
  "has_mask_input",
  "orig_im_size",
];

// An output whose full-size mask is made when first read.
class LazyOutput {
  constructor(logits, oh, ow, H, W, score, lowRes) {
    Object.assign(this, { logits, oh, ow, H, W, score, lowRes });
    this.full = null;
  }

  get mask() {
    if (!this.full) this.full = upscaleMask(this.logits, this.oh, this.ow, this.H, this.W);
    return this.full;
  }
}

// Logits oh×ow -> mask H×W (1 where > 0): bilinear, half-pixel centres, sources clamped at 0
// (torch.nn.functional.interpolate, mode "bilinear", align_corners=False). A blend of values
// all ≤ 0 is ≤ 0, so only the rows and columns whose sources reach a positive logit are
// computed: an object's box, not the whole photo.
export function upscaleMask(logits, oh, ow, H, W) {
  const out = new Uint8Array(H * W);
  let ymin = oh;
  let ymax = -1;
  let xmin = ow;
  let xmax = -1;
  for (let y = 0; y < oh; y++) {
    for (let x = 0; x < ow; x++) {
      if (logits[y * ow + x] > 0) {
        if (y < ymin) ymin = y;
        if (y > ymax) ymax = y;
        if (x < xmin) xmin = x;
        if (x > xmax) xmax = x;
      }
    }
  }
  if (ymax < 0) return out;
  const axis = (n, m) => {
    const i0 = new Int32Array(n);
    const i1 = new Int32Array(n);
    const w = new Float64Array(n);
    for (let i = 0; i < n; i++) {
      const src = Math.max(0, (i + 0.5) * (m / n) - 0.5);
      i0[i] = Math.min(Math.floor(src), m - 1);
      i1[i] = Math.min(i0[i] + 1, m - 1);
      w[i] = src - i0[i];
    }
    return [i0, i1, w];
  };
  const [y0, y1, wy] = axis(H, oh);
  const [x0, x1, wx] = axis(W, ow);
  let xa = 0;
  while (xa < W && x1[xa] < xmin) xa++;
  let xb = W - 1;
  while (xb >= 0 && x0[xb] > xmax) xb--;
  for (let y = 0; y < H; y++) {
    if (y1[y] < ymin || y0[y] > ymax) continue;
    const a = y0[y] * ow;
    const b = y1[y] * ow;
    const v = wy[y];
    const row = y * W;
    for (let x = xa; x <= xb; x++) {
      const u = wx[x];
      const l = x0[x];
      const r = x1[x];
      const t = logits[a + l] + (logits[a + r] - logits[a + l]) * u;
      const d = logits[b + l] + (logits[b + r] - logits[b + l]) * u;
      out[row + x] = t + (d - t) * v > 0 ? 1 : 0;
    }
  }
  return out;
}
