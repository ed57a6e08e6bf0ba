// COCO compressed RLE (the format every mask travels in): run lengths of alternating 0/1
// pixels in column-major order, starting with a run of 0s; each run is delta-coded against
// the run two before it and written as 5-bit groups (6th bit: more follows) offset by 48.
// Masks in the page are row-major Uint8Array(H*W) with 1 inside.

export function rleDecode(rle) {
  const [h, w] = rle.size;
  const counts = parseCounts(rle.counts);
  const out = new Uint8Array(h * w);
  let index = 0;
  for (let i = 0; i < counts.length; i++) {
    const end = index + counts[i];
    if (i % 2 === 1) {
      for (let k = index; k < end; k++) out[(k % h) * w + Math.floor(k / h)] = 1;
    }
    index = end;
  }
  return out;
}

function parseCounts(text) {
  const counts = [];
  let p = 0;
  while (p < text.length) {
    let x = 0;
    let k = 0;
    let more = true;
    while (more) {
      const c = text.charCodeAt(p) - 48;
      x |= (c & 0x1f) << (5 * k);
      more = (c & 0x20) !== 0;
      p++;
      k++;
      if (!more && c & 0x10) x |= -1 << (5 * k);
    }
    if (counts.length > 2) x += counts[counts.length - 2];
    counts.push(x);
  }
  return counts;
}

export function rleEncode(mask, h, w) {
  const counts = [];
  let previous = 0;
  let run = 0;
  for (let col = 0; col < w; col++) {
    for (let row = 0; row < h; row++) {
      const v = mask[row * w + col] ? 1 : 0;
      if (v !== previous) {
        counts.push(run);
        run = 0;
        previous = v;
      }
      run++;
    }
  }
  counts.push(run);
  let text = "";
  for (let i = 0; i < counts.length; i++) {
    let x = counts[i];
    if (i > 2) x -= counts[i - 2];
    let more = true;
    while (more) {
      let c = x & 0x1f;
      x >>= 5;
      more = c & 0x10 ? x !== -1 : x !== 0;
      if (more) c |= 0x20;
      text += String.fromCharCode(c + 48);
    }
  }
  return { size: [h, w], counts: text };
}

export function maskArea(mask) {
  let n = 0;
  for (let i = 0; i < mask.length; i++) n += mask[i];
  return n;
}
