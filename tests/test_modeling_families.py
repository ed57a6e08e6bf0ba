"""The encoder contract's proof: a second encoder family, defined and registered here and
nowhere else, builds, is detected from its weights, loads, and predicts through the Predictor,
the automatic generator, training's layer decay and the input-size change, without any module
outside its registration knowing of it."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import ClassVar

import numpy as np
import pytest
import torch
from helpers import perturb_
from torch import nn

from segany import MaskGenerator, Predictor, build_sam, load_model, save_model
from segany.checkpoints import convert, infer_config
from segany.config import DecoderConfig, PromptConfig, SamConfig
from segany.errors import CheckpointError, InputError
from segany.modeling import LayerNorm2d
from segany.modeling.families import (
    EncoderConfig,
    EncoderFamily,
    Shapes,
    families,
    family_of,
    register,
    unregister,
)
from segany.train.optim import build_optimizer
from segany.train.resize import resize_input
from segany.transforms import ResizeLongestSide


@dataclasses.dataclass(frozen=True)
class ToyConfig(EncoderConfig):
    """A patchify convolution and a 1×1 neck: the smallest encoder that keeps the contract."""

    family: ClassVar[str] = "toy"
    width: int
    image_size: int = 64
    patch_size: int = 8
    frame: int = 0  # the prompt frame's side when it differs from image_size (0: the same)

    @property
    def frame_size(self) -> int:
        return self.frame or self.image_size

    @property
    def embedding_size(self) -> int:
        return self.image_size // self.patch_size


class ToyEncoder(nn.Module):
    """B×3×S×S -> B×out×(S/p)×(S/p)."""

    def __init__(self, cfg: ToyConfig, out_chans: int) -> None:
        super().__init__()
        self.img_size = cfg.image_size
        self.stem = nn.Conv2d(3, cfg.width, cfg.patch_size, stride=cfg.patch_size)
        self.pos = nn.Parameter(torch.zeros(1, cfg.width, cfg.embedding_size, cfg.embedding_size))
        self.neck = nn.Sequential(nn.Conv2d(cfg.width, out_chans, 1), LayerNorm2d(out_chans))
        self.fast_calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.neck(torch.relu(self.stem(x) + self.pos))


class ToyFamily(EncoderFamily):
    name: ClassVar[str] = "toy"
    config_type: ClassVar[type[EncoderConfig]] = ToyConfig
    module_type: ClassVar[type[nn.Module]] = ToyEncoder
    limits: ClassVar[Mapping[str, float]] = {"width": 4096, "image_size": 4096}

    def build(self, config: EncoderConfig, *, out_chans: int) -> nn.Module:
        assert isinstance(config, ToyConfig)
        return ToyEncoder(config, out_chans)

    def detect(self, shapes: Shapes) -> ToyConfig | None:
        stem = shapes.get("image_encoder.stem.weight")
        pos = shapes.get("image_encoder.pos")
        if stem is None or pos is None:
            return None
        return ToyConfig(width=stem[0], image_size=pos[-1] * stem[-1], patch_size=stem[-1])

    def num_layers(self, config: EncoderConfig) -> int:
        return 2

    def layer_id(self, name: str, config: EncoderConfig) -> int:
        return 0 if name.startswith(("stem", "pos")) else 2

    def with_input_size(self, config: EncoderConfig, image_size: int) -> ToyConfig:
        assert isinstance(config, ToyConfig)
        return dataclasses.replace(config, image_size=image_size)

    def resize_state(self, state, old, new):
        out = dict(state)
        side = new.embedding_size
        out["pos"] = nn.functional.interpolate(state["pos"], size=(side, side), mode="bilinear")
        return out

    def fast_forward(self, encoder: nn.Module, images: torch.Tensor) -> torch.Tensor:
        encoder.fast_calls += 1  # type: ignore[operator]
        return encoder(images)


TOY = SamConfig(
    "toy-test",
    ToyConfig(width=24),
    prompt=PromptConfig(embed_dim=32),
    decoder=DecoderConfig(mlp_dim=64, iou_head_hidden_dim=32),  # 8 heads: not in the weights
)


@pytest.fixture
def toy_family():
    family = register(ToyFamily())
    yield family
    unregister("toy")


def _toy_model(seed: int = 0):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_sam(TOY)
    return perturb_(model, seed).eval()


def _photo() -> np.ndarray:
    rng = np.random.default_rng(3)
    img = rng.integers(0, 60, (50, 70, 3), dtype=np.uint8)
    img[10:35, 20:55] = (200, 40, 40)
    return img


def test_a_registered_family_builds_detects_loads_and_predicts(toy_family, tmp_path):
    model = _toy_model()
    assert isinstance(model.image_encoder, ToyEncoder)
    assert family_of(model.config.encoder) is toy_family

    # detected from the weights alone: an official-layout .pth carries no config
    official = convert(save_model(model, tmp_path / "toy.safetensors"), tmp_path / "toy.pth")[1]
    assert infer_config(model.state_dict()) == dataclasses.replace(TOY, name="custom")
    for path in (tmp_path / "toy.safetensors", official):
        loaded = load_model(path)
        assert loaded.config.encoder == TOY.encoder
        for key, value in model.state_dict().items():
            assert torch.equal(loaded.state_dict()[key], value), key

    # through the Predictor: the same masks as the modules called by hand
    predictor = Predictor(loaded, cache=False)
    predictor.set_image(_photo())
    assert loaded.image_encoder.fast_calls == 1  # the family's fast path served set_image
    out = predictor.predict(point_coords=np.array([[30.0, 20.0]]), point_labels=np.array([1]))
    with torch.inference_mode():
        x = torch.as_tensor(predictor.transform.apply_image(_photo())).permute(2, 0, 1)
        emb = model.image_encoder(model.preprocess(x[None].float()))
        pts = torch.as_tensor(
            predictor.transform.apply_coords(np.array([[[30.0, 20.0]]]), (50, 70))
        )
        sparse, dense = model.prompt_encoder((pts.float(), torch.tensor([[1]])), None, None)
        low, iou = model.mask_decoder(emb, model.prompt_encoder.get_dense_pe(), sparse, dense, True)
        full = model.postprocess_masks(low, tuple(x.shape[-2:]), (50, 70))
    assert np.allclose(out.scores, iou[0].numpy(), atol=1e-5)
    assert np.array_equal(out.masks, (full[0] > 0).numpy())

    # segment everything, layer-wise decay and another input size all go through the family
    records = MaskGenerator(
        loaded, points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.0
    ).generate(_photo())
    assert records and all(r.segmentation.shape == (50, 70) for r in records)
    opt = build_optimizer(loaded, lr=1.0, weight_decay=0.0, layer_decay=0.5)
    assert sorted({g["lr_scale"] for g in opt.param_groups}) == [
        0.125,
        0.5,
        1.0,
    ]  # stem, neck, the rest
    bigger = resize_input(loaded, 128)
    assert bigger.config.image_size == 128 and bigger.image_encoder.pos.shape[-1] == 16


def test_an_unregistered_family_is_refused_by_name(toy_family, tmp_path):
    model = _toy_model()
    path = save_model(model, tmp_path / "toy.safetensors")
    torch.save(model.state_dict(), tmp_path / "toy.pth")
    unregister("toy")
    with pytest.raises(InputError, match="unknown encoder family 'toy'"):
        build_sam(TOY)
    known = "known families: " + ", ".join(sorted(f.name for f in families()))
    with pytest.raises(CheckpointError, match=f"unknown encoder family 'toy'; {known}"):
        load_model(path)
    registered = re.escape("(" + ", ".join(sorted(f.name for f in families())) + ")")
    with pytest.raises(CheckpointError, match=f"no registered image encoder family {registered}"):
        load_model(tmp_path / "toy.pth")


def test_an_encoder_reading_a_smaller_image_than_the_prompt_frame(toy_family, tmp_path):
    """EfficientViT-SAM's l-models read 512 px and answer prompts in a 1024 frame: the image is
    resized for the encoder, while coordinates, ``input_size`` and the upscaled masks use the
    frame. Here the toy encoder reads 32 px and the frame is 64."""
    cfg = dataclasses.replace(
        TOY, encoder=ToyConfig(width=24, image_size=32, patch_size=4, frame=64)
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        model = perturb_(build_sam(cfg), 1).eval()
    assert (model.image_size, model.encoder_size) == (64, 32)
    assert cfg.frame_size == 64 and cfg.image_size == 32
    assert tuple(model.prompt_encoder.input_image_size) == (64, 64)

    photo = _photo()  # 50×70
    predictor = Predictor(model, cache=False)
    predictor.set_image(photo)
    assert predictor.input_size == (46, 64)  # the original resized to the 64 frame
    point = np.array([[30.0, 20.0]])
    out = predictor.predict(point_coords=point, point_labels=np.array([1]))
    with torch.inference_mode():
        small = ResizeLongestSide(32).apply_image(photo)  # 23×32: what the encoder reads
        x = torch.as_tensor(small).permute(2, 0, 1)[None].float()
        emb = model.image_encoder(model.preprocess(x))
        assert torch.allclose(predictor.features, emb, atol=1e-6)
        pts = torch.as_tensor(ResizeLongestSide(64).apply_coords(point[None], (50, 70)))
        sparse, dense = model.prompt_encoder((pts.float(), torch.tensor([[1]])), None, None)
        low, iou = model.mask_decoder(emb, model.prompt_encoder.get_dense_pe(), sparse, dense, True)
        full = model.postprocess_masks(low, (46, 64), (50, 70))
        # the official batched call agrees
        batched = model(
            [
                {
                    "image": x[0],
                    "original_size": (50, 70),
                    "point_coords": pts.float(),
                    "point_labels": torch.tensor([[1]]),
                }
            ],
            multimask_output=True,
        )[0]
    assert np.allclose(out.scores, iou[0].numpy(), atol=1e-5)
    assert np.array_equal(out.masks, (full[0] > 0).numpy())
    assert np.array_equal(batched["masks"][0].numpy(), out.masks)

    # a tensor given to set_torch_image must be sized for the encoder, and the error says so
    with pytest.raises(InputError, match=r"longest side must be 32.*ResizeLongestSide\(32\)"):
        predictor.set_torch_image(torch.zeros(1, 3, 46, 64), (50, 70))
    predictor.set_torch_image(x, (50, 70))
    assert predictor.input_size == (46, 64)

    # batches, a saved file and the generator keep both sizes
    (embedded,) = predictor.embed_images([photo])
    assert embedded.input_size == (46, 64)
    loaded = load_model(save_model(model, tmp_path / "frame.safetensors"))
    assert (loaded.image_size, loaded.encoder_size) == (64, 32)
    records = MaskGenerator(
        loaded, points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.0
    ).generate(photo)
    assert records and all(r.segmentation.shape == (50, 70) for r in records)

    # the onnxruntime backend reads both sizes from the files' metadata
    pytest.importorskip("onnxruntime")
    from segany.export import OnnxPredictor, export_pair

    export_pair(model, tmp_path / "onnx")
    runtime = OnnxPredictor.from_dir(tmp_path / "onnx")
    runtime.set_image(photo)
    got = runtime.predict(point_coords=point, point_labels=np.array([1]))
    assert np.allclose(got.scores, out.scores, atol=1e-4)
    assert (got.masks != out.masks).mean() < 1e-3
