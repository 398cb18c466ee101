"""Checkpoint integrity (processing/checkpoints.py): checksum manifests, and clear errors for damaged weights."""

from __future__ import annotations

import json
import shutil
import struct

import pytest
import torch

from asarg.processing.checkpoints import (
    MANIFEST,
    CheckpointError,
    load_model,
    open_checkpoint,
    read_checksums,
    verify_checksums,
    write_checksums,
)

pytest.importorskip("safetensors")


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A tiny ASaRG checkpoint (model and processor), saved once; tests work on copies."""
    from asarg.training.tiny import tiny_asarg

    model, processor = tiny_asarg()
    folder = tmp_path_factory.mktemp("checkpoint")
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder, model


@pytest.fixture
def checkpoint(saved, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(saved[0], folder)
    return folder


def _flip(path, offset: int, count: int = 64) -> None:
    data = bytearray(path.read_bytes())
    data[offset : offset + count] = bytes(b ^ 0xFF for b in data[offset : offset + count])
    path.write_bytes(bytes(data))


def test_a_verified_checkpoint_loads_with_the_same_weights(checkpoint, saved):
    manifest = write_checksums(checkpoint)
    names = read_checksums(checkpoint)
    assert manifest.name == MANIFEST and "model.safetensors" in names and "config.json" in names
    assert "processor_config.json" in names and "modeling_asarg.py" in names
    assert set(verify_checksums(checkpoint)) == set(names)
    model, processor = open_checkpoint(checkpoint)
    expected = saved[1].state_dict()
    assert all(torch.equal(tensor, expected[name]) for name, tensor in model.state_dict().items())
    assert processor.seg_image_size == 32


def test_64_flipped_bytes_are_caught_by_the_checksums(checkpoint):
    """safetensors has no checksum: these bytes, inside a tensor, loaded silently."""
    write_checksums(checkpoint)
    weights = checkpoint / "model.safetensors"
    _flip(weights, weights.stat().st_size - 200)
    load_model(checkpoint, verify=False)  # what any loader without the manifest does: no error at all
    with pytest.raises(CheckpointError, match=r"model\.safetensors is damaged: its sha256"):
        load_model(checkpoint)


def _lfs_pointer(data: bytes) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{'0' * 64}\nsize {len(data)}\n".encode()


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda data: data[: len(data) // 2], r"model\.safetensors is truncated: .*partial download"),
        (lambda data: data[:6], r"model\.safetensors is 6 bytes, too short .*partial download"),
        (lambda data: b"", r"model\.safetensors is empty \(0 bytes\)"),
        (lambda data: data[:8] + b"\xff" * 20 + data[28:], r"model\.safetensors has a corrupted header"),
        (lambda data: struct.pack("<Q", 10**9) + data[8:], r"model\.safetensors is truncated or its header is corr"),
        (_lfs_pointer, r"model\.safetensors is a git-LFS pointer .*git lfs pull"),
    ],
    ids=["truncated", "too-short", "empty", "header-corrupted", "header-size-corrupted", "lfs-pointer"],
)
def test_unreadable_weights_name_the_file_and_the_likely_cause(checkpoint, damage, message):
    """safetensors said "incomplete metadata" / "header too small" / "header too large", without a file name."""
    weights = checkpoint / "model.safetensors"
    weights.write_bytes(damage(weights.read_bytes()))
    with pytest.raises(CheckpointError, match=message):
        load_model(checkpoint)  # no manifest: the header checks find it


def test_with_a_manifest_a_damaged_file_is_reported_as_damaged(checkpoint):
    write_checksums(checkpoint)
    weights = checkpoint / "model.safetensors"
    weights.write_bytes(_lfs_pointer(weights.read_bytes()))
    with pytest.raises(CheckpointError, match=r"model\.safetensors is damaged"):
        load_model(checkpoint)


def test_a_header_safetensors_rejects_is_still_named(checkpoint):
    """A fault the header checks pass (an unknown dtype): safetensors' own error, with the folder and a hint."""
    weights = checkpoint / "model.safetensors"
    data = weights.read_bytes()
    (size,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + size])
    name = next(key for key in header if key != "__metadata__")
    header[name]["dtype"] = "F99"
    raw = json.dumps(header, separators=(",", ":")).encode().ljust(size)
    assert len(raw) == size
    weights.write_bytes(data[:8] + raw + data[8 + size :])
    with pytest.raises(CheckpointError, match=r"cannot be read .*download the checkpoint again"):
        load_model(checkpoint)


def test_manifest_problems_are_clear(checkpoint):
    with pytest.raises(CheckpointError, match=f"has no {MANIFEST}"):
        load_model(checkpoint, verify=True)
    write_checksums(checkpoint)
    (checkpoint / "generation_config.json").unlink()
    with pytest.raises(CheckpointError, match=r"generation_config\.json is listed .* but missing"):
        verify_checksums(checkpoint)
    (checkpoint / MANIFEST).write_text(f"{'0' * 64}  ../outside/model.safetensors\n")
    with pytest.raises(CheckpointError, match="line 1, is not"):
        verify_checksums(checkpoint)
    (checkpoint / MANIFEST).write_text("not a manifest\n")
    with pytest.raises(CheckpointError, match="line 1, is not"):
        verify_checksums(checkpoint)


def test_a_file_added_after_the_manifest_is_warned_about(checkpoint, caplog):
    write_checksums(checkpoint)
    (checkpoint / "extra.json").write_text("{}")
    with caplog.at_level("WARNING", logger="asarg.processing.checkpoints"):
        verify_checksums(checkpoint)
    assert "extra.json not covered" in caplog.text


def test_a_folder_without_weights_gets_no_manifest(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(CheckpointError, match="holds no weight file"):
        write_checksums(tmp_path)
    assert not (tmp_path / MANIFEST).exists()


def test_the_training_recipe_names_a_truncated_checkpoint(checkpoint):
    """The recipe loads ASaRG checkpoints through `load_model` (training/model_setup.py)."""
    from asarg.training.model_setup import load_model as recipe_load_model
    from asarg.training.sft_asarg import AsargModelConfig

    weights = checkpoint / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    args = AsargModelConfig(model_name_or_path=str(checkpoint), freeze_vision_tower=False, dtype=None)
    with pytest.raises(CheckpointError, match=r"model\.safetensors is truncated"):
        recipe_load_model(args)


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("{tmp}/no-such-folder", "does not exist"),
        ("./runs/no/such/run", "does not exist"),
        ("{tmp}/weights.bin", "is a file, not a checkpoint folder"),
        ("org/asarg-not-cached", "is not a folder here, and the Hub could not supply it"),
    ],
)
def test_a_source_that_is_neither_a_folder_nor_a_reachable_repository_is_named(tmp_path, monkeypatch, source, message):
    from asarg.processing.checkpoints import local_folder

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # the Hub case fails the same way with or without a network
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    (tmp_path / "weights.bin").write_bytes(b"")
    source = source.format(tmp=tmp_path)
    with pytest.raises(CheckpointError, match=message) as caught:
        local_folder(source)
    assert source in str(caught.value)
