"""benchmarks/shared_parts.py --quick: every step of the repaired benchmark at a tiny size."""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def test_the_quick_benchmark_runs_every_test_and_scores_undefined_maps_as_zero(tmp_path, capsys, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import shared_parts

    monkeypatch.setattr(sys, "argv", ["shared_parts.py", "--quick"])
    shared_parts.main(["--quick", "--pairs", "2", "--train", "10", "--no-write", "--workdir", str(tmp_path)])
    out = capsys.readouterr().out
    frame = pd.concat(pd.read_csv(f) for f in sorted((tmp_path / "values" / "insilico-v1").glob("f0-p7-*.csv")))
    assert set(frame["layout"]) == {"repainted", "pixel", "beside"}
    assert set(frame["test"]) == {"driver SPS", "reference SPS", "decoy SPS", "RS (head)", "RS (limbs)"}
    scored = frame[frame["method"] != shared_parts.CHANCE]
    assert scored["value"].notna().all()  # undefined maps are scored, as 0
    assert (scored.loc[scored["undefined"], "value"] == 0).all()
    rs = frame[frame["test"].str.startswith("RS")]
    assert set(rs["method"]) == {"PB (product, dimension, layer)", "PB (own, layer)", "colocation (layer)"}
    assert "single-image (0 by construction)" not in out
    assert "| undefined |" in out and "colocation (layer)" in out
    assert "**decoy SPS, beside**" in out and "**RS (head), pixel**" in out
    # RS is tested against the method's own control and the co-location control, never a constant 0
    assert shared_parts.opponents("RS (head)", "PB (product, dimension, layer)", ["saliency"]) == [
        "PB (own, layer)",
        "colocation (layer)",
    ]
    assert shared_parts.opponents("driver SPS", "PB (product, dimension, layer)", ["saliency"]) == [
        "saliency",
        "colocation (layer)",
    ]


def test_undefined_maps_count_as_zero_where_the_truth_is_defined():
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import shared_parts
    finally:
        sys.path.remove(str(BENCHMARKS))
    key = {"layout": "pixel", "position": "matched", "neuron": "limbs"}
    sps, rs = key | {"test": "driver SPS"}, key | {"test": "RS (head)"}
    frame = pd.DataFrame(
        [
            sps | {"pair": "a", "method": "m", "value": float("nan")},  # undefined map, truth defined: 0
            sps | {"pair": "b", "method": "m", "value": 0.8},
            sps | {"pair": "c", "method": "m", "value": float("nan")},  # truth undefined: dropped
            rs | {"pair": "a", "method": "m", "value": float("nan")},  # undefined map: 0
            rs | {"pair": "b", "method": "m", "value": float("nan")},  # the pair shares no head: dropped
        ]
    )
    truth = pd.DataFrame(
        [
            sps | {"pair": "a", "defined": True, "chance": 0.3},
            sps | {"pair": "b", "defined": True, "chance": 0.4},
            sps | {"pair": "c", "defined": False, "chance": float("nan")},
            rs | {"pair": "a", "defined": True, "chance": float("nan")},
            rs | {"pair": "b", "defined": False, "chance": float("nan")},
        ]
    )
    out = shared_parts.undefined_as_zero(frame, truth)
    m = out[out["method"] == "m"].set_index(["test", "pair"])
    assert m["value"].to_dict() == {("driver SPS", "a"): 0.0, ("driver SPS", "b"): 0.8, ("RS (head)", "a"): 0.0}
    assert m["undefined"].to_dict() == {("driver SPS", "a"): True, ("driver SPS", "b"): False, ("RS (head)", "a"): True}
    chance = out[out["method"] == shared_parts.CHANCE]
    assert list(chance["pair"]) == ["a", "b"] and list(chance["value"]) == [0.3, 0.4]


def test_a_second_run_reads_the_stored_units_and_pools_several(tmp_path, capsys, monkeypatch):
    """Units are stored as they end and read back by a run with the same settings (an interrupted run resumes); two
    fits are pooled by shared_parts_pooled."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import shared_parts

    argv = ["--quick", "--pairs", "1", "--train", "10", "--no-write", "--workdir", str(tmp_path), "--layouts", "pixel"]
    shared_parts.main(argv)
    assert "unit insilico-v1 fit 0 pairs 7 pixel" in capsys.readouterr().out
    stored = tmp_path / "values" / "insilico-v1" / "f0-p7-pixel.csv"
    before = stored.stat().st_mtime_ns
    shared_parts.main([*argv, "--fit-seeds", "0", "1"])
    out = capsys.readouterr().out
    assert "unit insilico-v1 fit 0" not in out and "unit insilico-v1 fit 1 pairs 7 pixel" in out
    assert stored.stat().st_mtime_ns == before
    assert "pooled: 1 backbones × fits [0, 1]" in out and "**Undefined maps**" in out
    # a method added later is computed alone and joins the stored ones
    shared_parts.main([*argv, "--occlusion"])
    assert "unit insilico-v1 fit 0 pairs 7 pixel: 1 methods in" in capsys.readouterr().out
    frame = pd.read_csv(stored)
    assert {"occlusion", "saliency", shared_parts.CHANCE} <= set(frame["method"])
    assert not frame.duplicated(["test", "position", "neuron", "pair", "method"]).any()


def test_every_pairwise_entry_runs_beside_its_own_control(monkeypatch):
    """Each list's pairwise methods come with the control they are tested against; a share_at entry on the layer
    path reads its map at that layer, so its control is own read there (not own at the readout layer)."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import shared_parts

    for methods in (shared_parts.PB_MAIN, shared_parts.PB_SWEEP, shared_parts.PB_QUICK, shared_parts.PB_ZOO):
        labels = {label for label, _ in methods}
        for label in labels:
            assert set(shared_parts.controls(label)) <= labels, label
    share_at = "PB (positive, dimension, layer, share_at=block2)"
    assert shared_parts.controls(share_at)[0] == "PB (own, layer, share_at=block2)"
    assert shared_parts.controls("PB (product, correspondence, layer)")[0] == "PB (own, layer)"
    assert [label for label, _ in shared_parts.PB_QUICK] == [
        "PB (product, dimension, layer)",
        "PB (own, layer)",
        "colocation (layer)",
    ]
