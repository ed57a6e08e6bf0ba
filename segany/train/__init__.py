"""Training and fine-tuning with the SAM paper's recipe, and the synthetic data of segany-tiny.

- ``synth``: textured overlapping-shape scenes written in SA-1B form (``segany synth``)
- ``datasets``: SA-1B folders and COCO JSON, resized + padded, several masks per image
- ``prompts``: first point/box prompt, error-region clicks, mask-only rounds
- ``losses``: focal + dice, IoU MSE, min over the multimask outputs
- ``trainer``: ``Trainer`` + ``TrainConfig`` (``segany train``); ``optim``: groups, schedule,
  drop path; ``checkpointing``: weights + exact resume; ``validation``: quick mIoU
- ``distill``: an encoder that reproduces a larger model's embeddings (``segany distill``)
- ``recipes``: named configs (``tiny``); ``quality``/``realdata``: the model card's figures
"""
