"""Aspect-ratio buckets: kohya's bucket set, the nearest bucket for 3:2 / 4:3 / portrait
photos, the cover-and-crop fit, per-bucket batches that replay from (seed, step), and
SDXL's size and crop ids from a photo's geometry."""

from collections import Counter

import pytest
from clood_candy_plugins.sd import bucketed
from clood_candy_plugins.sd.bucketed import (
    BucketedLatents,
    batches_per_epoch,
    bucket_batch_indices,
    size_ids,
    with_time_ids,
)

from clood_candy.buckets import bucket_sizes, bucket_step, cover_crop, nearest_bucket
from clood_candy.records import TrainConfig


@pytest.mark.parametrize("resolution", [64, 128, 256, 512, 768, 1024])
def test_every_bucket_fits_the_area_in_steps_and_the_square_is_there(resolution):
    step = bucket_step(resolution)
    sizes = bucket_sizes(resolution)
    assert (resolution // step * step,) * 2 in sizes
    for w, h in sizes:
        assert w % step == 0 and h % step == 0 and w * h <= resolution * resolution
        assert (h, w) in sizes  # portrait and landscape alike
        assert min(w, h) >= min(resolution // 2, step) and max(w, h) <= 2 * resolution
    assert len(sizes) > 5


def test_kohyas_set_at_512_and_sdxls_at_1024():
    assert bucket_step(512) == bucket_step(1024) == 64
    sizes = set(bucket_sizes(512))
    # kohya's make_bucket_resolutions((512, 512), 256, 1024): the tallest height per width
    assert {(256, 1024), (384, 640), (448, 576), (512, 512), (576, 448), (640, 384), (1024, 256)} <= sizes
    assert (576, 384) not in sizes  # not the tallest 64-step height for width 576
    # SDXL's own buckets for 3:2 and 4:3 photos
    assert nearest_bucket((6000, 4000), 1024) == (1216, 832)
    assert nearest_bucket((4000, 3000), 1024) == (1152, 896)
    assert nearest_bucket((3000, 4000), 1024) == (896, 1152)


def test_nearest_bucket_by_aspect_ratio():
    assert nearest_bucket((1200, 800), 128) == (160, 96)
    assert nearest_bucket((1200, 900), 128) == (144, 112)
    assert nearest_bucket((800, 1200), 128) == (96, 160)
    assert nearest_bucket((999, 1000), 128) == (128, 128)
    assert nearest_bucket((1200, 800), 512) == (640, 384)
    assert nearest_bucket((100, 10_000), 512) == (256, 1024)  # beyond the widest: the widest


def test_small_resolutions_have_steps_the_tiny_unet_can_halve():
    assert [bucket_step(r) for r in (64, 128, 256, 384)] == [16, 16, 32, 32]
    assert all(w % 16 == 0 and h % 16 == 0 for w, h in bucket_sizes(64))


def test_cover_crop_covers_the_bucket_and_crops_a_centred_sliver():
    fit = cover_crop((1200, 900), (144, 112))
    assert fit.resized == (149, 112) and (fit.left, fit.top) == (2, 0)
    fit = cover_crop((1200, 800), (160, 96))
    assert fit.resized == (160, 107) and (fit.left, fit.top) == (0, 5)
    exact = cover_crop((160, 96), (160, 96))
    assert exact.resized == (160, 96) and (exact.left, exact.top) == (0, 0)


def test_size_ids_carry_the_photo_size_and_where_the_crop_starts():
    # A 1200x800 photo; prep cut [100, 50, 1060, 690] and made it 96x64; trained at 80x48.
    fit = cover_crop((96, 64), (80, 48))
    assert fit.resized == (80, 53) and fit.top == 2
    # scale from the photo: 80/960; top = 50 * 53/640 + 2, left = 100 * 80/960
    assert size_ids((1200, 800), [100, 50, 1060, 690], (96, 64), fit) == [800, 1200, 6, 8, 48, 80]
    # No photo facts: the image is the original, the crop the fit's own.
    assert size_ids(None, None, (96, 64), fit) == [64, 96, 2, 0, 48, 80]


SIZES = [(80, 48)] * 3 + [(64, 64)] * 2 + [(48, 80)]


def test_batches_come_from_one_bucket_and_cover_every_item_each_epoch():
    config = TrainConfig(batch_size=2, seed=3)
    per_epoch = batches_per_epoch(SIZES, 1, 2)
    assert per_epoch == 2 + 1 + 1  # 3 wide (one short batch filled), 2 square, 1 tall (filled)
    epoch = [bucket_batch_indices(SIZES, config, step, 0) for step in range(1, per_epoch + 1)]
    for batch in epoch:
        assert len(batch) == 2 and len({SIZES[i] for i in batch}) == 1
    assert {i for b in epoch for i in b} == set(range(len(SIZES)))
    seen = Counter(i for b in epoch for i in b)
    assert all(seen[i] >= 1 for i in range(len(SIZES))) and sum(seen.values()) == 2 * per_epoch
    later = [bucket_batch_indices(SIZES, config, step, 0) for step in range(per_epoch + 1, 2 * per_epoch + 1)]
    assert later != epoch  # a new epoch, a new order


def test_batches_replay_from_seed_and_step_alone_and_processes_share_one_batch():
    config = TrainConfig(batch_size=1, gradient_accumulation=2, seed=1, repeats=2)
    first = [bucket_batch_indices(SIZES, config, s, m) for s in range(1, 9) for m in range(2)]
    bucketed._epoch_batches.cache_clear()  # from scratch, as a continued run in a new process
    again = [bucket_batch_indices(SIZES, config, s, m) for s in range(1, 9) for m in range(2)]
    assert first == again
    two = bucket_batch_indices(SIZES, TrainConfig(batch_size=1, seed=1), 5, 0, processes=2)
    assert len(two) == 2 and len({SIZES[i] for i in two}) == 1
    other_seed = [bucket_batch_indices(SIZES, config.model_copy(update={"seed": 2}), s, 0) for s in range(1, 9)]
    assert other_seed != first[::2]


def test_bucketed_latents_stack_within_a_bucket_only():
    import torch

    latents = BucketedLatents([torch.zeros(4, h // 8, w // 8) for w, h in SIZES], list(SIZES),
                              torch.arange(len(SIZES) * 6, dtype=torch.float32).view(-1, 6))
    assert latents[[0, 2]].stack().shape == (2, 4, 6, 10)
    assert latents.groups() == [[0, 1, 2], [3, 4], [5]]
    with pytest.raises(ValueError, match="different buckets"):
        latents[[0, 3]].stack()
    from clood_candy_plugins.sd.denoise import Cond

    square = Cond(torch.zeros(3, 2, 4), torch.zeros(3, 4), torch.full((3, 6), 64.0))
    mixed = with_time_ids(square, latents[[5]].time_ids)
    assert mixed.time_ids[0].tolist() == latents.time_ids[5].tolist() and mixed.time_ids[1:].eq(64).all()
    assert with_time_ids(Cond(torch.zeros(1, 2, 4)), latents.time_ids[:1]).time_ids is None  # SD1: none
