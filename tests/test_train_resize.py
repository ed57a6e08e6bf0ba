"""segany.train.resize: a model's weights at another input size (segany-tiny v4)."""

from __future__ import annotations

import pytest
import torch
from helpers import SMALL, reference_model, seeded_model

from segany.config import replace_encoder
from segany.errors import InputError
from segany.modeling.vit.encoder import relative_position_table
from segany.train.resize import resize_input


def test_same_size_is_a_copy():
    model = seeded_model(SMALL, seed=1)
    same = resize_input(model, SMALL.image_size)
    for key, value in model.state_dict().items():
        assert torch.equal(same.state_dict()[key], value), key


def test_double_size_loads_strictly_into_the_reference_modules():
    model = seeded_model(SMALL, seed=2)
    size = 2 * SMALL.image_size
    big = resize_input(model, size)
    assert big.config == replace_encoder(SMALL, image_size=size)
    grid = size // SMALL.encoder.patch_size
    assert big.image_encoder.pos_embed.shape == (1, grid, grid, SMALL.encoder.embed_dim)
    reference_model(big.config, big.state_dict())  # strict load; raises on any mismatch


def test_tables_are_what_the_encoder_resamples_at_run_time():
    # The official code resamples a relative-position table of another length at run time;
    # the stored tables are that resampling, so the encoder's outputs are the same whether the
    # tables were resized in advance or on the fly (only the position embedding differs).
    model = seeded_model(SMALL, seed=3)
    size = 2 * SMALL.image_size
    big = resize_input(model, size)
    grid = size // SMALL.encoder.patch_size
    checked = 0
    for old, new in zip(model.image_encoder.blocks, big.image_encoder.blocks, strict=True):
        for name in ("rel_pos_h", "rel_pos_w"):
            small_table, big_table = getattr(old.attn, name), getattr(new.attn, name)
            if small_table.shape == big_table.shape:  # a windowed block: sized by its window
                assert torch.equal(small_table, big_table)
                continue
            on_the_fly = relative_position_table(grid, small_table)
            assert torch.allclose(relative_position_table(grid, big_table), on_the_fly, atol=1e-6)
            checked += 1
    assert checked == 2 * len(SMALL.encoder.global_attn_indexes)
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        model.image_encoder.pos_embed = big.image_encoder.pos_embed  # only this differs now
        on_the_fly_out, stored_out = model.image_encoder(x), big.image_encoder(x)
    torch.testing.assert_close(on_the_fly_out, stored_out, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("size", [0, -64, SMALL.image_size + 1])
def test_sizes_that_do_not_fit_the_patches_are_refused(size):
    with pytest.raises(InputError, match="multiple of the patch size"):
        resize_input(seeded_model(SMALL), size)
