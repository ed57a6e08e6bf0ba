"""--precision and --cache/--no-cache on the commands that load a model (in-process runs)."""

from __future__ import annotations

import pytest
import torch
from test_cli import images, model_path, run_main  # noqa: F401  (fixtures)


@pytest.mark.parametrize("command", ["segment", "auto"])
def test_precision_and_cache_options(tmp_path, model_path, images, capsys, command):  # noqa: F811
    cache = tmp_path / "cache"
    extra = ["--point", "20,15"] if command == "segment" else ["--points-per-side", "4"]
    argv = [command, images / "a.png", "-o", tmp_path / "out", "--model", model_path]
    code, out, err = run_main(capsys, *argv, *extra, "--precision", "int8", "--cache", cache, "-v")
    assert code == 0, err
    assert "encoder precision int8" in err
    assert len(list(cache.glob("*.safetensors"))) == 1
    code, _, err = run_main(
        capsys, *argv, *extra, "--overwrite" if command == "auto" else "--json", "--no-cache"
    )
    assert code == 0, err
    assert len(list(cache.glob("*.safetensors"))) == 1


def test_bad_precision_is_a_usage_error(tmp_path, model_path, images, capsys):  # noqa: F811
    code, _, err = run_main(
        capsys, "segment", images / "a.png", "--point", "1,1", "-o", tmp_path, "--precision", "x"
    )
    assert code == 2 and "--precision" in err


def test_compile_option_runs_the_encoder_through_torch_compile(
    tmp_path,
    model_path,  # noqa: F811
    images,  # noqa: F811
    capsys,
    monkeypatch,
):
    compiled = []

    def fake_compile(
        module, **kw
    ):  # the real one takes ~15 s here (tests/test_inference_precision.py)
        compiled.append(module)
        return module

    monkeypatch.setattr(torch, "compile", fake_compile)
    argv = ["segment", images / "a.png", "--point", "20,15", "-o", tmp_path, "--model", model_path]
    code, _, err = run_main(capsys, *argv, "--compile", "--no-cache", "-v")
    assert code == 0, err
    assert "torch.compile" in err
    assert len(compiled) == 1
