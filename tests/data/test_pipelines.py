"""The view pipelines: image folders decoded once into memory (cache), streamed when over the budget,
the path ``build_pipeline`` picks."""

from __future__ import annotations

import os
import stat
import time

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF
from PIL import Image

from selfsup.augment.batched import crop_boxes_from_uniforms
from selfsup.augment.views import view_specs
from selfsup.config import AugmentConfig
from selfsup.data import cache, load_dataset
from selfsup.data.base import ImageDataset
from selfsup.data.in_memory import BatchedPipeline
from selfsup.data.per_image import PerImagePipeline
from selfsup.data.pipeline import build_pipeline, choose_data_path
from selfsup.data.streaming import StreamingPipeline, crop_views, draft_request
from tests.helpers import make_jpeg_folder, smooth_image

CPU = torch.device("cpu")


@pytest.fixture
def folder(tmp_path):
    return load_dataset("imagefolder", "train", str(make_jpeg_folder(tmp_path / "images")))


AUG = AugmentConfig(image_size=16).resolved(16)


# ----------------------------------------------------------------------------- the cache


def test_stored_size_leaves_room_for_crops():
    assert [cache.stored_size(s) for s in (224, 96, 32, 16)] == [256, 110, 37, 19]


def test_cache_round_trips_and_a_reload_does_not_decode(folder, tmp_path, monkeypatch):
    first = cache.load_or_build(folder, 16, tmp_path / "cache", verbose=False)
    size = cache.stored_size(16)
    assert first.images.shape == (len(folder), 3, size, size) and first.images.dtype == torch.uint8
    assert torch.equal(first.labels, folder.labels) and first.classes == folder.classes and first.in_memory
    for i in (0, len(folder) - 1):  # the stored pixels are the file, decoded and resized
        assert np.array_equal(first.images[i].numpy(), cache.decode_square(folder.files[i], size, 3))
    assert len(list((tmp_path / "cache").iterdir())) == 1

    def no_decoding(*args, **kwargs):
        raise AssertionError("a current cache must not be decoded again")

    monkeypatch.setattr(cache, "build_cache", no_decoding)
    again = cache.load_or_build(folder, 16, tmp_path / "cache", verbose=False)
    assert torch.equal(again.images, first.images)


def test_the_cache_is_private_and_unused_caches_are_pruned(folder, tmp_path):
    root = tmp_path / "cache"
    root.mkdir(mode=0o755)
    old = root / "0123456789abcdef-0123456789abcdef.npy"  # a cache nobody used for 40 days
    np.save(old, np.zeros((1, 3, 4, 4), np.uint8))
    os.utime(old, (time.time() - 40 * 86400,) * 2)
    built = cache.load_or_build(folder, 16, root, verbose=False)
    assert not old.exists()  # pruned when the new cache was built
    files = list(root.glob("*.npy"))
    assert len(files) == 1 and built.in_memory
    assert stat.S_IMODE(root.stat().st_mode) == 0o700 and stat.S_IMODE(files[0].stat().st_mode) == 0o600
    os.utime(files[0], (time.time() - 40 * 86400,) * 2)
    cache.load_or_build(folder, 16, root, verbose=False)  # a use refreshes it
    assert time.time() - files[0].stat().st_mtime < 60


def test_decode_square_keeps_the_central_square():
    image = np.zeros((30, 60, 3), np.uint8)
    image[:, 15:45] = 200  # the central 30x30 square is bright, the sides black
    path_dir = os.environ.get("TMPDIR", "/tmp")
    path = os.path.join(path_dir, f"selfsup-square-{os.getpid()}.png")
    Image.fromarray(image).save(path)
    try:
        out = cache.decode_square(path, 10, 3)
    finally:
        os.unlink(path)
    assert out.shape == (3, 10, 10) and (out[..., 1:-1] == 200).all()  # the black sides are cut off
    assert (out[..., [0, -1]] > 150).all()  # (the antialiasing filter reaches just past the square)


def test_cache_is_invalidated_when_a_file_changes(folder, tmp_path):
    before = cache.cache_file(folder.files, 19, 3, tmp_path / "cache")
    old = cache.load_or_build(folder, 16, tmp_path / "cache", verbose=False)
    changed = folder.files[3]
    smooth_image(np.random.default_rng(7), 40, 30).save(changed, quality=90)
    os.utime(changed, ns=(os.stat(changed).st_atime_ns, os.stat(changed).st_mtime_ns + 10**9))
    after = cache.cache_file(folder.files, 19, 3, tmp_path / "cache")
    assert after != before
    new = cache.load_or_build(folder, 16, tmp_path / "cache", verbose=False)
    assert np.array_equal(new.images[3].numpy(), cache.decode_square(changed, 19, 3))
    assert not torch.equal(new.images[3], old.images[3]) and torch.equal(new.images[4], old.images[4])
    assert sorted((tmp_path / "cache").iterdir()) == [after]  # the stale entry was replaced


def test_cache_write_is_atomic(folder, tmp_path, monkeypatch):
    decode = cache.decode_square_sized

    def fails_on_the_last_file(path, size, channels):
        if path == folder.files[-1]:
            raise OSError("unreadable file")  # not a BadImageError: a failure of the machine, not of the file
        return decode(path, size, channels)

    monkeypatch.setattr(cache, "decode_square_sized", fails_on_the_last_file)
    with pytest.raises(OSError, match="unreadable file"):
        cache.load_or_build(folder, 16, tmp_path / "cache", verbose=False)
    assert list((tmp_path / "cache").iterdir()) == []  # no partial file left to mistake for a cache


def test_memory_budget(folder, monkeypatch):
    need = cache.decoded_bytes(len(folder), 3, cache.stored_size(16))
    assert need == len(folder) * 3 * 19 * 19
    assert cache.fits_in_memory(folder, 16, budget_mb=1) and not cache.fits_in_memory(folder, 16, budget_mb=0)
    monkeypatch.setattr(cache, "available_memory_bytes", lambda: 2 * need)
    assert cache.memory_budget_bytes(None) == need and cache.fits_in_memory(folder, 16, None)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")  # two processes share the machine's memory
    assert not cache.fits_in_memory(folder, 16, None)


# ----------------------------------------------------------------------------- choosing the path


def test_build_pipeline_picks_the_path(folder, tmp_path):
    memory = ImageDataset(
        name="m", channels=3, mean=[0.5] * 3, std=[0.25] * 3, images=torch.zeros(16, 3, 16, 16, dtype=torch.uint8)
    )
    kwargs = {"cache_dir": str(tmp_path / "cache"), "num_workers": 0}
    assert isinstance(build_pipeline(memory, AUG, batch_size=8, device=CPU, **kwargs), BatchedPipeline)
    cached = build_pipeline(folder, AUG, batch_size=8, device=CPU, memory_budget_mb=1, **kwargs)
    assert isinstance(cached, BatchedPipeline) and cached.dataset.in_memory
    assert cached.dataset.images.shape[-1] == 19
    assert isinstance(
        build_pipeline(folder, AUG, batch_size=8, device=CPU, memory_budget_mb=0, **kwargs), StreamingPipeline
    )
    assert isinstance(
        build_pipeline(folder, AUG, batch_size=8, device=CPU, data_path="streaming", memory_budget_mb=1, **kwargs),
        StreamingPipeline,
    )
    assert isinstance(
        build_pipeline(folder, AUG, batch_size=8, device=CPU, data_path="per-image", **kwargs), PerImagePipeline
    )
    assert isinstance(
        build_pipeline(memory, AUG, batch_size=8, device=CPU, data_path="per-image", **kwargs), PerImagePipeline
    )
    with pytest.raises(ValueError, match="memory budget"):
        build_pipeline(folder, AUG, batch_size=8, device=CPU, data_path="batched", memory_budget_mb=0, **kwargs)
    with pytest.raises(ValueError, match="streaming reads image files"):
        choose_data_path(memory, AUG, "streaming")
    with pytest.raises(ValueError, match="Valid: auto, batched, streaming, per-image"):
        choose_data_path(memory, AUG, "fast")


def test_cached_folder_trains_like_an_in_memory_dataset(folder, tmp_path):
    pipeline = build_pipeline(folder, AUG, batch_size=8, device=CPU, memory_budget_mb=1, cache_dir=str(tmp_path / "c"))
    batch = next(pipeline.epoch(0))
    assert [tuple(v.shape) for v in batch.views] == [(8, 3, 16, 16)] * 2
    assert all(v.dtype == torch.float32 for v in batch.views) and len(pipeline) == len(folder) // 8


# ----------------------------------------------------------------------------- streaming


def test_crop_views_shapes_dtypes_and_multicrop(folder):
    cfg = AugmentConfig(image_size=16, small_crops=2, small_size=8).resolved(16)
    specs = view_specs(cfg)
    views = crop_views(str(folder.files[0]), specs, cfg, 3, torch.Generator().manual_seed(0))
    assert [tuple(v.shape) for v in views] == [(3, 16, 16)] * 2 + [(3, 8, 8)] * 2
    assert all(v.dtype == torch.uint8 for v in views)
    gray = crop_views(str(folder.files[0]), specs, cfg, 1, torch.Generator().manual_seed(0))
    assert tuple(gray[0].shape) == (1, 16, 16)


def test_crop_views_match_torchvision_resized_crop(tmp_path):
    """The worker's geometry is torchvision's per-image RandomResizedCrop + flip, on the same box."""
    path = tmp_path / "big.jpg"
    smooth_image(np.random.default_rng(3), 400, 300).save(path, quality=95)
    cfg = AugmentConfig(image_size=32, crop_scale=(0.5, 1.0), flip_prob=(0.0,)).resolved(32)
    specs = view_specs(cfg)[:1]
    full = crop_views(str(path), specs, cfg, 3, torch.Generator().manual_seed(1), use_draft=False)[0]
    drafted = crop_views(str(path), specs, cfg, 3, torch.Generator().manual_seed(1), use_draft=True)[0]
    u = torch.rand(1, 23, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    top, left, h, w = (
        int(t)
        for t in crop_boxes_from_uniforms(
            u[:, :10], u[:, 10:20], u[:, 20], u[:, 21], (300, 400), cfg.crop_scale, cfg.crop_ratio
        )
    )
    with Image.open(path) as img:
        ref = TF.resized_crop(img.convert("RGB"), top, left, h, w, [32, 32], antialias=True)
    ref = torch.from_numpy(np.asarray(ref).transpose(2, 0, 1).copy()).float()
    assert (full.float() - ref).abs().mean() < 1.0  # same box; PIL's box-resize vs crop-then-resize
    assert (drafted.float() - ref).abs().mean() < 3.0  # decoded at 1/4 or 1/8 DCT scale: close, not equal
    assert not torch.equal(drafted, full)  # the draft was really used


def test_draft_request_keeps_the_output_resolution():
    assert draft_request((400, 300), [(0, 0, 200, 160)], [32]) == (80, 60)  # 5x reduction allowed
    assert draft_request((400, 300), [(0, 0, 200, 160), (0, 0, 40, 40)], [32, 32]) is None  # 1.25x only


def test_streaming_is_deterministic_and_resumable(folder):
    def make(workers):
        return StreamingPipeline(dataset=folder, augment=AUG, batch_size=4, device=CPU, seed=3, num_workers=workers)

    in_process = list(make(0).epoch(0))
    with_workers = list(make(1).epoch(0))
    assert len(in_process) == len(folder) // 4
    for a, b in zip(in_process, with_workers):  # same crops in a worker process as in this one
        assert torch.equal(a.index, b.index)
        assert all(torch.equal(x, y) for x, y in zip(a.views, b.views))
    view = in_process[0].views[0]
    assert view.shape == (4, 3, 16, 16) and view.dtype == torch.float32
    assert abs(float(view.mean())) < 3 and not torch.equal(in_process[0].views[0], in_process[0].views[1])
    resumed = next(make(0).epoch(0, start_batch=2))
    assert all(torch.equal(x, y) for x, y in zip(resumed.views, in_process[2].views))
    next_epoch = next(make(0).epoch(1))
    assert not torch.equal(next_epoch.views[0], in_process[0].views[0])


def test_colour_stage_is_apply_without_the_geometry():
    """The streaming path's device stage: ``colour`` of the cropped uint8 views equals ``apply`` on the images."""
    from selfsup.augment import BatchedViewAugmenter
    from selfsup.augment.batched import resized_crop_flip

    cfg = AugmentConfig(image_size=16, blur_prob=(1.0,), solarize_prob=(0.5,)).resolved(16)
    augmenter = BatchedViewAugmenter(cfg, 3, [0.5] * 3, [0.25] * 3)
    images = torch.randint(0, 256, (32, 3, 20, 20), dtype=torch.uint8)
    params = augmenter.sample_params(32, 0, torch.Generator().manual_seed(5), (20, 20))
    crops = resized_crop_flip(images, params.top, params.left, params.height, params.width, params.flip, 16)
    as_uint8 = (crops * 255).round().to(torch.uint8)  # what the workers hand over: within half a level
    expected = augmenter.apply(images, params, 16)
    assert torch.allclose(augmenter.colour(crops.clone(), params), expected, atol=1e-6)
    from_uint8 = augmenter.colour(as_uint8, params)
    assert (from_uint8 - expected).abs().mean() < 2 / 255 / 0.25  # rounding, spread a little by jitter and blur
    assert not torch.allclose(augmenter.colour(as_uint8.flip(0), params), expected, atol=0.1)  # control
