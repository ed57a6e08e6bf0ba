"""Load, save and convert SAM weights; get official checkpoints by name.

Three formats are read and written (see ``segany.checkpoints.files``): the official ``.pth``
state dicts, transformers' ``SamModel`` weights, and segany's safetensors with the config in its
metadata. A source's format and variant are read from its content (metadata, key names, tensor
shapes), never from its file name. Loading is strict: every key must be there with its shape.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from segany.checkpoints.download import CHECKPOINTS, cache_dir, ensure_checkpoint
from segany.checkpoints.files import (
    FORMATS,
    RawWeights,
    read_weights,
    write_hf,
    write_official,
    write_segany,
)
from segany.checkpoints.hf import hf_to_official
from segany.checkpoints.hf_sam2 import hf_sam2_to_segany, is_hf_sam2
from segany.checkpoints.sam2_keys import is_sam2_layout, sam2_release, sam2_to_segany
from segany.checkpoints.shapes import (
    check_config_limits,
    check_state_dict,
    describe,
    infer_config,
    with_pixel_stats,
)
from segany.devices import check_device
from segany.errors import CheckpointError, InputError
from segany.models import SamConfig, build_sam

if TYPE_CHECKING:
    from segany.modeling import Sam

PathLike = str | os.PathLike[str]

DEFAULT_MODEL = Path(__file__).parent.parent / "weights" / "segany_tiny.safetensors"


def load_state_dict(path: PathLike) -> tuple[SamConfig, dict[str, torch.Tensor]]:
    """Read weights in any supported format -> (config, state dict with the official keys).

    The config comes from the file's metadata (segany files, transformers' config.json) or
    else from the tensors' shapes. The state dict is checked against that config strictly;
    a mismatch raises ``CheckpointError`` naming the missing, unexpected and mis-shaped keys."""
    cfg, state, check, _ = _read(path)
    check(None)  # the expected layout comes from a model built on the meta device
    return cfg, state


_Check = Callable[[dict[str, tuple[int, ...]] | None], None]


def _read(
    path: PathLike,
) -> tuple[SamConfig, dict[str, torch.Tensor], _Check, dict[str, float]]:
    """(config, official-key state dict, a strict check to run against a model's shapes, the
    file's generator defaults)."""
    path = Path(path)
    raw = read_weights(path)
    state, release = _segany_keys(raw)
    if raw.config is not None:
        cfg = raw.config
        detected = _try_infer(state, release)
    else:
        cfg = detected = infer_config(state, sam2_release=release)
    cfg = with_pixel_stats(cfg, state)
    check_config_limits(cfg, source=f"the {raw.kind} weights in {path}")

    def check(expected: dict[str, tuple[int, ...]] | None) -> None:
        source = f"the {raw.kind} weights in {path}"
        check_state_dict(cfg, state, source=source, detected=detected, expected=expected)

    return cfg, state, check, raw.generator_defaults


def _try_infer(state: dict[str, torch.Tensor], release: str = "2.1") -> SamConfig | None:
    try:
        return infer_config(state, sam2_release=release)
    except CheckpointError:
        return None


def _segany_keys(raw: RawWeights) -> tuple[dict[str, torch.Tensor], str]:
    """The file's state dict with segany's keys (transformers' and official SAM 2 names
    converted; SAM 2's video-only weights set aside) and its SAM 2 release ("2.1" when it is
    none or cannot tell)."""
    if raw.kind == "hf":
        if is_hf_sam2(list(raw.state)):
            state, _video, release = hf_sam2_to_segany(raw.state)
            return state, release
        return hf_to_official(raw.state), "2.1"
    if is_sam2_layout(raw.state):
        return sam2_to_segany(raw.state)[0], sam2_release(raw.state)
    return raw.state, "2.1"


def load_into(model: torch.nn.Module, path: PathLike) -> torch.nn.Module:
    """Load the weights at ``path`` into an existing ``Sam`` strictly; the error names the
    model's variant when the file holds another one."""
    cfg = getattr(model, "config", None)
    raw = read_weights(Path(path))
    state, release = _segany_keys(raw)
    state.pop("pixel_mean", None)
    state.pop("pixel_std", None)
    if isinstance(cfg, SamConfig):
        check_state_dict(
            cfg,
            state,
            source=f"the weights in {path}",
            detected=raw.config or _try_infer(state, release),
            expected={k: tuple(v.shape) for k, v in model.state_dict().items()},
        )
    model.load_state_dict(state, strict=True)
    return model


def load_model(
    name_or_path: PathLike | None = None,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
    progress: bool = True,
) -> Sam:
    """A ``Sam`` in eval mode with loaded weights.

    ``name_or_path``: ``"vit_b"``, ``"vit_l"``, ``"vit_h"`` or MobileSAM's ``"vit_t"`` (the
    official weights, downloaded into the cache on first use: ``$SEGANY_HOME``, else the user
    cache folder), a weights file or transformers folder in any supported format, or ``None``
    for the bundled default model.
    ``dtype`` converts the floating-point weights (default: keep float32)."""
    device = check_device(device)
    if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise InputError(
            f"dtype must be a floating torch dtype (torch.float16, ...), got {dtype!r}"
        )
    path = resolve(name_or_path, progress=progress)
    cfg, state, check, generator_defaults = _read(path)
    # The file's tensors must fit the config before a model of that config is allocated: a
    # small file claiming a huge config is refused here, not after building gigabytes.
    check(None)
    model = build_sam(cfg)
    model.load_state_dict(state, strict=True)
    model.generator_defaults = dict(generator_defaults)
    del state
    model.to(device=device, dtype=dtype)
    return model.eval()


def resolve(name_or_path: PathLike | None, *, progress: bool = True) -> Path:
    """The local weights path for a variant name (downloading it if needed), a path, or None."""
    if name_or_path is None:
        if not DEFAULT_MODEL.is_file():
            raise CheckpointError(
                f"the bundled default model ({DEFAULT_MODEL.name}) is not part of this "
                f"installation; pass a variant name ({', '.join(sorted(CHECKPOINTS))}) to "
                "download the official weights, or the path of a weights file"
            )
        return DEFAULT_MODEL
    if not isinstance(name_or_path, (str, os.PathLike)) or isinstance(
        os.fspath(name_or_path), bytes
    ):
        raise TypeError(
            "the model must be a variant name or a path (str or os.PathLike), or None for the "
            f"bundled model; got {type(name_or_path).__name__} {name_or_path!r:.80}"
        )
    if not os.fspath(name_or_path).strip():  # Path("") is ".", the current folder
        raise CheckpointError(
            f"the model name or path is empty; expected a variant name "
            f"({', '.join(sorted(CHECKPOINTS))}) or the path of a weights file or folder"
        )
    path = Path(name_or_path)
    if path.exists() or path.is_symlink():  # a broken link: read_weights says so
        return path
    if isinstance(name_or_path, str) and name_or_path in CHECKPOINTS:
        return ensure_checkpoint(name_or_path, progress=progress)
    raise CheckpointError(
        f"{str(name_or_path)!r} is neither an existing file or folder nor a known variant "
        f"({', '.join(sorted(CHECKPOINTS))})"
    )


def save_model(model: torch.nn.Module, path: PathLike, *, half: bool = False) -> Path:
    """Save ``model`` as segany safetensors (its ``SamConfig`` in the metadata); ``half``
    stores floats as fp16 (loading casts them back to the model's dtype)."""
    cfg = getattr(model, "config", None)
    if not isinstance(cfg, SamConfig):
        raise InputError(
            "save_model needs a segany Sam with its .config (a SamConfig); build it with "
            "segany.build_sam or load it with segany.load_model"
        )
    path = Path(path)
    own = getattr(model, "generator_defaults", None) or {}
    write_segany(model.state_dict(), cfg, path, half=half, generator_defaults=own)
    return path


def save_state_dict(
    cfg: SamConfig,
    state: dict[str, torch.Tensor],
    dst: PathLike,
    fmt: str,
    *,
    half: bool = False,
    generator_defaults: dict[str, float] | None = None,
) -> Path:
    """Write an official-key state dict as ``fmt`` ("segany", "official" or "hf");
    ``generator_defaults`` travel only in segany files."""
    dst = Path(dst)
    if fmt == "segany":
        write_segany(state, cfg, dst, half=half, generator_defaults=generator_defaults)
    elif fmt == "official":
        if cfg.decoder.sam2:
            raise CheckpointError(
                "an official SAM 2 file also holds the video weights, which segany's image "
                "model does not keep: keep the released .pt, or save as .safetensors (segany)"
            )
        write_official(state, dst, half=half)
    elif fmt == "hf":
        write_hf(state, cfg, dst, half=half)
    else:
        raise InputError(f"unknown weights format {fmt!r}; choose one of {', '.join(FORMATS)}")
    return dst


def destination_format(dst: PathLike) -> str:
    """The format the caller asked for by naming the destination: ``.safetensors`` -> segany,
    ``.pth``/``.pt`` -> official, a folder (existing, or a name without suffix) -> hf."""
    dst = Path(dst)
    suffix = dst.suffix.lower()
    if dst.is_dir() or (not suffix and not dst.exists()):
        return "hf"
    if suffix == ".safetensors":
        return "segany"
    if suffix in (".pth", ".pt"):
        return "official"
    raise InputError(
        f"cannot tell the output format from {dst.name!r}: pass fmt= one of {', '.join(FORMATS)}"
    )


def convert(
    src: PathLike, dst: PathLike, fmt: str | None = None, *, half: bool = False
) -> tuple[SamConfig, Path]:
    """Convert weights between formats. The source format is read from its content; the
    destination format is ``fmt`` or follows from ``dst`` (see ``destination_format``)."""
    fmt = fmt or destination_format(dst)
    if fmt not in FORMATS:
        raise InputError(f"unknown weights format {fmt!r}; choose one of {', '.join(FORMATS)}")
    cfg, state, check, defaults = _read(src)
    check(None)
    return cfg, save_state_dict(cfg, state, dst, fmt, half=half, generator_defaults=defaults)


@dataclass(frozen=True)
class CachedModel:
    """One row of ``segany models``: a known model and whether it is on disk."""

    name: str
    path: Path
    num_bytes: int | None  # the complete file's size (None: unknown)
    cached: bool
    partial_bytes: int = 0  # bytes of an interrupted download waiting to resume

    @property
    def description(self) -> str:
        from segany.models import VARIANTS

        cfg = VARIANTS.get(self.name)
        return describe(cfg) if cfg else "bundled default model"


def cached_models() -> list[CachedModel]:
    """The official variants (cached or not, with sizes) and the bundled default model."""
    rows = []
    folder = cache_dir()
    for name, info in sorted(CHECKPOINTS.items()):
        path = folder / info.filename
        part = path.with_name(path.name + ".part")
        rows.append(
            CachedModel(
                name=name,
                path=path,
                num_bytes=info.num_bytes,
                # only verified files are ever given the final name; the size tells a
                # foreign file apart where it is published
                cached=path.is_file() and info.num_bytes in (None, path.stat().st_size),
                partial_bytes=part.stat().st_size if part.is_file() else 0,
            )
        )
    bundled = DEFAULT_MODEL.is_file()
    rows.append(
        CachedModel(
            name="default",
            path=DEFAULT_MODEL,
            num_bytes=DEFAULT_MODEL.stat().st_size if bundled else None,
            cached=bundled,
        )
    )
    return rows
