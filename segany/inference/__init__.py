"""The Predictor's machinery: everything between a model and the masks a caller gets back.

- ``predictor``: ``Predictor`` (the public prompt-to-mask API) and its decoder state per image;
- ``prediction``: ``Prediction``, the typed result (numpy only; the onnxruntime backend returns
  it too);
- ``protocol``: ``PredictorLike``, the one contract every predictor and wrapper keeps;
- ``precision``: fp32 / bf16 / fp16 / int8 encoding, and "auto";
- ``embedding_cache``: image embeddings on disk, keyed by pixels, model and precision;
- ``batch_embed``: several images through the encoder in batches (``embed_images``);
- ``thread_pool``: independent pieces of CPU work side by side, one torch thread each.

Nothing is imported here, so ``segany.inference.prediction`` and ``.protocol`` load without
torch (``segany.export.runtime`` relies on that).
"""
