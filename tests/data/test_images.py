"""Odd but valid image files work (16-bit, mixed grey and colour, tiny), broken ones are skipped and named once,
and too many broken ones fail the run: decoding (selfsup.data.images), the policy (selfsup.data.bad_images), the
cache, the streaming and per-image paths, and the image-folder loader."""

from __future__ import annotations

import pickle
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from selfsup.augment.views import view_specs
from selfsup.config import AugmentConfig, ConfigError
from selfsup.data import cache, load_dataset
from selfsup.data.bad_images import BadImageLog, TooManyBadImagesError, first_readable, read_images
from selfsup.data.images import BadImageError, open_image, read_image, to_mode
from selfsup.data.per_image import PerImagePipeline
from selfsup.data.streaming import StreamingPipeline, crop_views

CPU = torch.device("cpu")


# ----------------------------------------------------------------------------- writing odd files


def write_png16(path, values) -> None:
    """A 16-bit grey PNG (PIL mode ``I;16``) of the uint16 array ``values``."""
    Image.fromarray(np.asarray(values, dtype=np.uint16)).save(path)


def write_rgb(path, size: int = 8, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path)


def write_grey(path, size: int = 8, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (size, size), dtype=np.uint8)).save(path)


def write_truncated_jpeg(path) -> None:
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(path, quality=90)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def write_text_as_png(path) -> None:
    path.write_text("this is a text file, not an image\n")


def write_bomb_png(path, side: int = 30000) -> None:
    """A tiny PNG whose header declares ``side`` x ``side`` pixels (over twice PIL's default limit)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    )


BROKEN = {"truncated.jpg": write_truncated_jpeg, "text.png": write_text_as_png, "bomb.png": write_bomb_png}


def labelled_folder_with_broken_files(root, per_class: int = 6):
    """``root/train/{a,b}/*.png`` (``per_class`` good images each) plus the three BROKEN files in
    ``root/train/b``, and one good image per class in ``root/val``."""
    for name in ("a", "b"):
        (root / "train" / name).mkdir(parents=True)
        (root / "val" / name).mkdir(parents=True)
        write_rgb(root / "val" / name / "v.png")
        for i in range(per_class):
            write_rgb(root / "train" / name / f"{name}{i}.png", seed=10 * (name == "b") + i)
    for filename, write in BROKEN.items():
        write(root / "train" / "b" / filename)
    return root


def warned_files(err: str) -> list[str]:
    return [line.split(": ")[3] for line in err.splitlines() if "skipping an unreadable image" in line]


# ----------------------------------------------------------------------------- decoding


def test_16_bit_png_is_scaled_not_clipped(tmp_path):
    path = tmp_path / "deep.png"
    write_png16(path, [[0, 1000, 32768, 65535]])
    with open_image(path) as image:
        assert image.mode == "I;16"  # what PIL opens a 16-bit grey PNG as
        clipped = np.asarray(image.convert("L"))  # PIL alone: everything over 255 is white
        assert clipped.tolist() == [[0, 255, 255, 255]]
        scaled = np.asarray(to_mode(image, "L", path))
    assert scaled.tolist() == [[0, 4, 128, 255]]  # round(v / 257)
    assert np.asarray(read_image(path, "RGB"))[0, :, 0].tolist() == [0, 4, 128, 255]


def test_32_bit_integer_images_are_scaled():
    low = Image.fromarray(np.array([[0, 200]], dtype=np.int32))  # mode I within 8 bits: kept as is
    sixteen = Image.fromarray(np.array([[0, 32768, 65535]], dtype=np.int32))  # older PIL opens 16-bit PNGs as I
    wide = Image.fromarray(np.array([[0, 2**30, 2**31 - 1]], dtype=np.int32))
    assert low.mode == sixteen.mode == wide.mode == "I"
    assert np.asarray(to_mode(low, "L", "low")).tolist() == [[0, 200]]
    assert np.asarray(to_mode(sixteen, "L", "sixteen")).tolist() == [[0, 128, 255]]
    assert np.asarray(to_mode(wide, "L", "wide")).tolist() == [[0, 128, 255]]


@pytest.mark.parametrize("filename", sorted(BROKEN))
def test_broken_files_raise_one_error_that_names_the_file(tmp_path, filename):
    path = tmp_path / filename
    BROKEN[filename](path)
    with pytest.raises(BadImageError) as err:
        read_image(path, "RGB")
    assert str(path) in str(err.value) and err.value.path == str(path)
    expected = {"truncated.jpg": "truncated", "text.png": "not an image", "bomb.png": "decompression bomb"}
    assert expected[filename] in err.value.reason
    again = pickle.loads(pickle.dumps(err.value))  # crosses DataLoader worker boundaries
    assert (again.path, again.reason) == (err.value.path, err.value.reason)


def test_decompression_bomb_limit_is_pils(tmp_path, monkeypatch):
    path = tmp_path / "large.png"
    write_rgb(path, size=40)  # 1600 px
    assert read_image(path, "RGB").size == (40, 40)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # over the limit, under twice it: PIL only warns
    with pytest.raises(BadImageError, match="decompression bomb"):
        read_image(path, "RGB")


# ----------------------------------------------------------------------------- the policy


def test_bad_image_log_allows_one_percent_and_warns_once_per_file(capsys):
    log = BadImageLog(100)
    log.add("x/one.png", "corrupt")
    log.add("x/one.png", "corrupt")  # the same file again: no second warning
    assert len(log) == 1 and warned_files(capsys.readouterr().err) == ["x/one.png"]
    with pytest.raises(TooManyBadImagesError, match=r"2 of 100 images \(2 %\) cannot be read") as err:
        log.add("x/two.png", "truncated")
    assert "x/one.png: corrupt" in str(err.value) and "x/two.png: truncated" in str(err.value)
    assert "max_bad_fraction" in str(err.value)


def test_first_readable_replaces_a_bad_index_with_the_next_good_one():
    def read(i: int) -> int:
        if i in (3, 4):
            raise BadImageError(f"f{i}", "corrupt")
        return 10 * i

    assert first_readable(2, 6, read) == (20, 2, [])
    assert first_readable(3, 6, read, max_failures=2) == (50, 5, [(3, "corrupt"), (4, "corrupt")])
    assert first_readable(3, 6, read, known_bad={3, 4}) == (50, 5, [])  # known: not tried again
    assert first_readable(5, 6, read) == (50, 5, [])
    assert first_readable(3, 6, read, max_failures=1) == (None, -1, [(3, "corrupt"), (4, "corrupt")])  # gives up


def test_read_images_skips_and_names_the_bad_ones(tmp_path, capsys):
    good = tmp_path / "good.png"
    write_rgb(good)
    bad = tmp_path / "text.png"
    write_text_as_png(bad)
    images, kept = read_images([good, bad], "L", BadImageLog(2, max_fraction=0.5))
    assert kept == [good] and len(images) == 1 and images[0].mode == "L"
    assert warned_files(capsys.readouterr().err) == [str(bad)]


# ----------------------------------------------------------------------------- the cache


def test_16_bit_images_through_the_loader_and_the_cache(tmp_path):
    root = tmp_path / "deep"
    root.mkdir()
    for name, value in (("mid", 32768), ("top", 65535), ("low", 1000)):
        write_png16(root / f"{name}.png", np.full((8, 8), value))
    ds = load_dataset("imagefolder", "pretrain", str(root))
    assert ds.channels == 1 and [p.name for p in ds.files] == ["low.png", "mid.png", "top.png"]
    assert [int(np.asarray(ds.pil(i)).max()) for i in range(3)] == [4, 128, 255]
    cached = cache.load_or_build(ds, 8, tmp_path / "cache", verbose=False)
    assert cached.images.shape == (3, 1, 10, 10)
    assert [sorted(torch.unique(cached.images[i]).tolist()) for i in range(3)] == [[4], [128], [255]]


def test_cache_leaves_broken_files_out_and_keeps_labels_aligned(tmp_path, capsys, monkeypatch):
    root = labelled_folder_with_broken_files(tmp_path / "images")
    ds = load_dataset("imagefolder", "pretrain", str(root))
    assert len(ds) == 15
    bad = {str(root / "train" / "b" / name) for name in BROKEN}
    capsys.readouterr()
    cached = cache.load_or_build(ds, 8, tmp_path / "cache", max_bad_fraction=0.25)
    assert sorted(warned_files(capsys.readouterr().err)) == sorted(bad)
    good = [i for i, f in enumerate(ds.files) if str(f) not in bad]
    assert len(cached) == 12 and cached.labels.tolist() == ds.labels[good].tolist() == [0] * 6 + [1] * 6
    for row, i in enumerate(good):  # each row is the decoded file of its label
        assert np.array_equal(cached.images[row].numpy(), cache.decode_square(ds.files[i], 10, 3))
    cache_path = cache.cache_file(ds.files, 10, 3, tmp_path / "cache")
    assert cache.bad_list_file(cache_path).is_file()
    assert {file for _, file, _ in cache.read_bad_list(cache_path)} == bad

    def no_decoding(*args, **kwargs):
        raise AssertionError("a current cache must not be decoded again")

    monkeypatch.setattr(cache, "build_cache", no_decoding)
    again = cache.load_or_build(ds, 8, tmp_path / "cache", max_bad_fraction=0.25)
    assert torch.equal(again.images, cached.images) and torch.equal(again.labels, cached.labels)
    assert sorted(warned_files(capsys.readouterr().err)) == sorted(bad)  # a later run names them again
    with pytest.raises(TooManyBadImagesError, match="3 of 15 images"):  # at the default 1 %: too many
        cache.load_or_build(ds, 8, tmp_path / "cache")


def test_cache_build_fails_over_one_percent_and_writes_nothing(tmp_path):
    root = tmp_path / "many"
    root.mkdir()
    for i in range(99):
        write_grey(root / f"{i:03d}.png", size=4, seed=i)
    write_text_as_png(root / "zz1.png")
    ds = load_dataset("imagefolder", "pretrain", str(root))
    assert len(cache.load_or_build(ds, 4, tmp_path / "ok", verbose=False)) == 99  # 1 of 100 bad: 1 %, allowed
    write_truncated_jpeg(root / "zz2.jpg")
    ds = load_dataset("imagefolder", "pretrain", str(root))
    with pytest.raises(TooManyBadImagesError, match=r"2 of 101 images .* more than the 1 %") as err:
        cache.load_or_build(ds, 4, tmp_path / "cache", verbose=False)
    assert "zz1.png" in str(err.value) and "zz2.jpg" in str(err.value)
    assert list((tmp_path / "cache").iterdir()) == []


# ----------------------------------------------------------------------------- streaming and per-image


AUG = AugmentConfig(image_size=8).resolved(8)


@pytest.mark.parametrize("path", ["streaming", "per-image"])
def test_workers_replace_broken_files_and_the_main_process_names_them_once(tmp_path, capsys, path):
    root = labelled_folder_with_broken_files(tmp_path / "images")
    ds = load_dataset("imagefolder", "pretrain", str(root))
    bad = {i for i, f in enumerate(ds.files) if f.name in BROKEN}
    pipeline_class = StreamingPipeline if path == "streaming" else PerImagePipeline
    kwargs = {"dataset": ds, "augment": AUG, "batch_size": 5, "device": CPU, "num_workers": 0}
    pipeline = pipeline_class(**kwargs, max_bad_fraction=0.25)
    capsys.readouterr()
    epochs = [list(pipeline.epoch(e)) for e in range(2)]
    for batches in epochs:
        assert len(batches) == 3 and all(v.shape[0] == 5 for b in batches for v in b.views)  # sizes kept
        seen = torch.cat([b.index for b in batches]).tolist()
        assert not set(seen) & bad  # replacements, never the broken files
        assert all(torch.equal(b.labels, ds.labels[b.index]) for b in batches)  # labels follow the images
    assert sorted(warned_files(capsys.readouterr().err)) == sorted(str(ds.files[i]) for i in bad)  # once each
    again = [list(pipeline_class(**kwargs, max_bad_fraction=0.25).epoch(e)) for e in range(2)]
    assert all(  # deterministic: a fresh pipeline picks the same replacements and draws
        torch.equal(a.index, b.index) and all(torch.equal(x, y) for x, y in zip(a.views, b.views))
        for first, second in zip(epochs, again)
        for a, b in zip(first, second)
    )
    with pytest.raises(TooManyBadImagesError, match="15 images"):  # at the default 1 %
        [list(pipeline_class(**kwargs).epoch(e)) for e in range(2)]


def test_streaming_crops_of_a_16_bit_image_are_scaled(tmp_path):
    path = tmp_path / "deep.png"
    write_png16(path, np.full((12, 12), 32768))
    views = crop_views(str(path), view_specs(AUG), AUG, 1, torch.Generator().manual_seed(0))
    assert all(torch.unique(v).tolist() == [128] for v in views)


# ----------------------------------------------------------------------------- the image-folder loader


def make_mixed(root, grey: int, colour: int) -> None:
    root.mkdir(parents=True)
    for i in range(grey):
        write_grey(root / f"g{i}.png", seed=i)
    for i in range(colour):
        write_rgb(root / f"c{i}.png", seed=i)


@pytest.mark.parametrize(("grey", "colour", "channels"), [(2, 3, 3), (3, 2, 1)])
def test_mixed_folder_takes_the_majority_with_a_notice(tmp_path, capsys, grey, colour, channels):
    make_mixed(tmp_path / "mixed", grey, colour)
    ds = load_dataset("imagefolder", "pretrain", str(tmp_path / "mixed"))
    assert ds.channels == channels and len(ds.mean) == channels
    assert all(ds.pil(i).mode == ("L" if channels == 1 else "RGB") for i in range(len(ds)))
    notices = [line for line in capsys.readouterr().err.splitlines() if "mixes grey and colour" in line]
    assert len(notices) == 1 and f"{grey} grey, {colour} colour" in notices[0]
    load_dataset("imagefolder", "pretrain", str(tmp_path / "mixed"))
    assert "mixes grey and colour" not in capsys.readouterr().err  # once per process


def test_channels_setting_overrides_the_majority(tmp_path, capsys):
    make_mixed(tmp_path / "mixed", 1, 4)
    ds = load_dataset("imagefolder", "pretrain", str(tmp_path / "mixed"), channels=1)
    assert ds.channels == 1 and ds.mean == [0.5] and {ds.pil(i).mode for i in range(5)} == {"L"}
    assert "mixes grey and colour" not in capsys.readouterr().err  # asked for: no notice
    assert load_dataset("imagefolder", "pretrain", str(tmp_path / "mixed")).channels == 3
    with pytest.raises(ConfigError, match="channels must be 0"):
        load_dataset("imagefolder", "pretrain", str(tmp_path / "mixed"), channels=2)


def test_built_in_datasets_refuse_another_channel_count():
    with pytest.raises(ConfigError, match="fashion-mnist has 1 channel; channels=3"):
        load_dataset("fashion-mnist", "train", None, channels=3)
    with pytest.raises(ConfigError, match="cifar10 has 3 channels; channels=1"):
        load_dataset("cifar10", "train", None, channels=1)


def test_every_split_gets_the_pretraining_images_channels_and_size(tmp_path):
    from selfsup.data.datasets import native_size

    for split, name, writer, count, size in (
        ("train", "a", write_rgb, 3, 12),
        ("train", "b", write_grey, 2, 12),
        ("val", "a", write_grey, 2, 20),  # the test split alone is grey and larger
        ("val", "b", write_grey, 2, 20),
    ):
        (tmp_path / split / name).mkdir(parents=True)
        for i in range(count):
            writer(tmp_path / split / name / f"{i}.png", size=size, seed=i)
    splits = [load_dataset("imagefolder", split, str(tmp_path)) for split in ("pretrain", "train", "test")]
    assert [len(ds) for ds in splits] == [5, 5, 4]
    assert [ds.channels for ds in splits] == [3, 3, 3]  # the pretraining images' majority
    assert [ds.native_size for ds in splits] == [12, 12, 12] and native_size("imagefolder", str(tmp_path)) == 12


def test_tiny_images_warn_in_the_loader_and_the_cache(tmp_path, capsys):
    root = tmp_path / "tiny"
    root.mkdir()
    write_rgb(root / "000.png", size=1)  # the first file
    for i in range(1, 6):
        write_rgb(root / f"{i}.png", size=16, seed=i)
    ds = load_dataset("imagefolder", "pretrain", str(root))
    assert ds.native_size == 16  # the median, not the first file (a 1x1 one)
    warnings = [line for line in capsys.readouterr().err.splitlines() if "smaller than" in line]
    assert len(warnings) == 1 and "1 of 6 sampled images" in warnings[0] and "16 px" in warnings[0]
    assert f"{root / '000.png'}, 1x1 px" in warnings[0]
    cache.load_or_build(ds, 16, tmp_path / "cache")
    warnings = [line for line in capsys.readouterr().err.splitlines() if "smaller than" in line]
    assert len(warnings) == 1 and "1 of 6 images" in warnings[0] and "000.png, 1x1 px" in warnings[0]


def test_no_tiny_warning_for_images_as_large_as_the_views(tmp_path, capsys):
    root = tmp_path / "fine"
    root.mkdir()
    for i in range(4):
        write_rgb(root / f"{i}.png", size=16, seed=i)
    ds = load_dataset("imagefolder", "pretrain", str(root))
    cache.load_or_build(ds, 16, tmp_path / "cache")
    assert "smaller than" not in capsys.readouterr().err


def test_a_folder_of_unreadable_files_is_an_error(tmp_path):
    from selfsup.data import DatasetNotFoundError

    (tmp_path / "junk").mkdir()
    for i in range(3):
        write_text_as_png(tmp_path / "junk" / f"{i}.png")
    with pytest.raises(DatasetNotFoundError, match="none of the 3 sampled image files"):
        load_dataset("imagefolder", "pretrain", str(tmp_path / "junk"))
