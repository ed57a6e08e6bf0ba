// The prompt decoder in the browser: onnxruntime-web (WebAssembly, served by segany) running
// the ONNX export of the current model's decoder on the embedding the server computed.
// Inputs and outputs follow the official web demo's interface (see segany.export.decoder);
// the export keeps all 4 mask tokens: 0 is the single-mask output, 1-3 the multimask ones.

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
    return new BrowserDecoder(session);
  }

  // emb: {data Float32Array, shape [1,C,h,w], inputSize [h',w'], originalSize [H,W]}
  // prompt: {points [[x,y]...], labels [1|0...], box [x0,y0,x1,y1]|null, maskInput Float32Array|null}
  // Returns [{mask Uint8Array(H*W), score, lowRes Float32Array(s*s)}] (3 with multimask, else 1).
  async run(emb, prompt, multimask) {
    const [H, W] = emb.originalSize;
    const [ih, iw] = emb.inputSize;
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
      orig_im_size: new ort.Tensor("float32", Float32Array.from([H, W]), [2]),
    };
    const out = await this.session.run(feeds);
    const masks = out.masks.data;
    const scores = out.iou_predictions.data;
    const low = out.low_res_masks.data;
    const picks = multimask ? [1, 2, 3] : [0];
    return picks.map((k) => {
      const mask = new Uint8Array(H * W);
      const offset = k * H * W;
      for (let i = 0; i < H * W; i++) mask[i] = masks[offset + i] > 0 ? 1 : 0;
      return { mask, score: scores[k], lowRes: low.slice(k * s * s, (k + 1) * s * s) };
    });
  }
}
