"""Work items are verified before use: a damaged, forged-short or checksum-less item is recomputed."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from sharedattr.runtime.work_store import CHECKSUM_KEY, WorkStore, shape_validator, tensors_checksum


def values() -> dict[str, torch.Tensor]:
    return {"values": torch.linspace(0.0, 1.0, 8)}


@pytest.fixture
def store(tmp_path) -> WorkStore:
    store = WorkStore(tmp_path / "work")
    store.get_or_compute("scores", "k", values, shape_validator({"values": (8,)}))
    return store


def again(store: WorkStore) -> tuple[dict[str, torch.Tensor], WorkStore]:
    fresh = WorkStore(store.folder)
    return fresh.get_or_compute("scores", "k", values, shape_validator({"values": (8,)})), fresh


def test_a_stored_item_carries_its_checksum_and_is_reused(store):
    from safetensors import safe_open

    with safe_open(str(store.path("scores", "k")), framework="pt") as f:
        assert f.metadata()[CHECKSUM_KEY] == tensors_checksum(values())
    out, fresh = again(store)
    assert fresh.hits == 1 and fresh.misses == 0 and torch.equal(out["values"], values()["values"])


def test_a_one_byte_flip_in_the_data_is_recomputed_not_trusted(store):
    path = store.path("scores", "k")
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x01  # inside the last float's bytes: the file stays a valid safetensors file
    path.write_bytes(bytes(data))
    with pytest.warns(UserWarning, match=r"work item .*scores-k.safetensors is damaged \(checksum mismatch\)"):
        out, fresh = again(store)
    assert fresh.misses == 1 and fresh.damaged == [path]
    assert torch.equal(out["values"], values()["values"])
    assert again(store)[1].hits == 1  # rewritten whole


def test_lookup_reads_a_sound_item_and_reports_a_damaged_one(store):
    fresh = WorkStore(store.folder)
    assert torch.equal(fresh.lookup("scores", "k", shape_validator({"values": (8,)}))["values"], values()["values"])
    assert fresh.hits == 1 and fresh.misses == 0
    assert fresh.lookup("scores", "missing") is None and fresh.misses == 0  # nothing computed, nothing counted
    with pytest.warns(UserWarning, match=r"has shape \(8,\), expected \[7\]"):  # the check fails: reported, not trusted
        assert fresh.lookup("scores", "k", shape_validator({"values": (7,)})) is None
    path = store.path("scores", "k")
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.warns(UserWarning, match="is damaged"):
        assert fresh.lookup("scores", "k") is None
    assert path in fresh.damaged
    assert WorkStore(None).lookup("scores", "k") is None


@pytest.mark.parametrize(
    "planted, reason",
    [
        ({"values": torch.zeros(7)}, "no checksum"),  # a valid file holding a shorter vector
        ({"values": torch.full((8,), float("nan"))}, "no checksum"),  # NaN values
        ({"other": torch.zeros(8)}, "no checksum"),  # the key is missing
    ],
)
def test_valid_files_without_a_checksum_are_recomputed(store, planted, reason):
    save_file(planted, str(store.path("scores", "k")))
    with pytest.warns(UserWarning, match=reason):
        out, _ = again(store)
    assert torch.equal(out["values"], values()["values"])


@pytest.mark.parametrize(
    "planted, reason",
    [
        ({"values": torch.zeros(7)}, r"'values' has shape \(7,\), expected \[8\]"),
        ({"other": torch.zeros(8)}, "missing values"),
        ({"values": torch.tensor(0.5)}, r"'values' has 0 dimensions \(\), expected 1 \[8\]"),  # crashed torch.cat
        ({"values": torch.zeros(8, dtype=torch.int32)}, "torch.int32, expected a floating-point tensor"),
        ({"values": torch.zeros(8), "extra": torch.zeros(8)}, "unexpected tensor 'extra'"),
    ],
)
def test_an_item_with_a_valid_checksum_but_the_wrong_shape_is_recomputed(store, planted, reason):
    save_file(planted, str(store.path("scores", "k")), metadata={CHECKSUM_KEY: tensors_checksum(planted)})
    with pytest.warns(UserWarning, match=reason):
        out, _ = again(store)
    assert torch.equal(out["values"], values()["values"])


def test_truncated_items_are_recomputed(store):
    path = store.path("scores", "k")
    path.write_bytes(path.read_bytes()[:40])
    with pytest.warns(UserWarning, match="unreadable"):
        out, _ = again(store)
    assert torch.equal(out["values"], values()["values"])


def test_the_checksum_sees_names_dtypes_shapes_and_bytes():
    base = {"a": torch.zeros(4)}
    variants = [{"b": torch.zeros(4)}, {"a": torch.zeros(4, dtype=torch.float64)}, {"a": torch.zeros(2, 2)}]
    variants.append({"a": torch.tensor([0.0, 0.0, 0.0, 1e-30])})
    assert len({tensors_checksum(t) for t in [base, *variants]}) == 5
    assert tensors_checksum({"a": torch.zeros(4), "b": torch.ones(1)}) == tensors_checksum(
        {"b": torch.ones(1), "a": torch.zeros(4)}
    )


def test_the_checksum_reads_tensors_of_any_strides():
    """A size-1 dimension may carry any stride (a synthesizer's one-seed responses did): same bytes, same checksum."""
    odd = torch.as_strided(torch.arange(10.0), (1,), (5,))
    column = torch.arange(15.0).view(3, 5)[:, 2]
    assert tensors_checksum({"a": odd, "b": column}) == tensors_checksum({"a": odd.clone(), "b": column.clone()})
