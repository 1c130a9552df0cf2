"""Hostile input: random and malformed configs, odd and corrupt images, extreme responses, unknown ids.

Every input either works (possibly after a documented conversion) or raises a
:class:`~sharedattr.runtime.errors.UserError` naming the file and the field: never another
exception type, never a traceback from the CLI, never a NaN in what is written.
"""

from __future__ import annotations

import copy
import csv
import io
import itertools
import json
import math
import re
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from sharedattr.cli import main
from sharedattr.config.files import load_experiment
from sharedattr.config.spec import ExperimentSpec
from sharedattr.config.validation import validate_experiment
from sharedattr.data import StimulusSet, load_responses
from sharedattr.data.responses import MAX_ABS_RESPONSE
from sharedattr.encoding.scores import held_out_r
from sharedattr.experiment.stages import fit_experiment
from sharedattr.runtime.errors import ConfigError, DataError, SpecError, UserError
from toml_writer import toml_text

FUZZ = settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
_counter = itertools.count()


def fresh(folder: Path, name: str) -> Path:
    """A new path in ``folder`` per hypothesis example (tmp_path is shared by all examples of a test)."""
    sub = folder / f"ex{next(_counter)}"
    sub.mkdir(parents=True)
    return sub / name


def write_config(path: Path, config: dict) -> Path:
    if path.suffix == ".json":
        path.write_text(json.dumps(config))
    elif path.suffix in (".yaml", ".yml"):
        path.write_text(yaml.safe_dump(config))
    else:
        path.write_text(toml_text(config))
    return path


def assert_names_file_and_field(err: UserError, path: Path) -> None:
    """A config error names the file, and every spec problem its field."""
    assert isinstance(err, UserError), type(err)
    assert str(path) in str(err), err
    if isinstance(err, SpecError):
        for issue in err.issues:
            assert issue.loc or re.match(r"(Value error, )?(evaluators|selection|data)\b", issue.message), issue


def check_config(path: Path, capsys) -> ExperimentSpec | None:
    """load_experiment and `sharedattr validate --no-data` (the spec alone) agree: a spec and exit 0, or a UserError
    and exit 2."""
    try:
        spec = load_experiment(path)
    except UserError as err:
        assert_names_file_and_field(err, path)
        spec = None
    capsys.readouterr()
    code = main(["validate", "--no-data", str(path)])
    out, err = capsys.readouterr()
    if spec is None:
        assert code == 2 and err.startswith("error: ") and str(path) in err and "Traceback" not in err, err
    else:
        assert code == 0 and "valid experiment" in out
    return spec


# -- (a) configs -------------------------------------------------------------------------------------
SUFFIXES = [".toml", ".yaml", ".yml", ".json"]
JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)
HOSTILE_NAMES = [
    "os.system",
    "os:system",
    "this",
    "builtins.__import__",
    "sharedattr.pipeline:run_experiment",
    "",
    " ",
    "saliency ",
    "SALIENCY",
    "../../etc/passwd",
    "ridge\x00",
    "cosine; rm -rf /",
    "💥",
]
FIELDS = [
    "name",
    "seed",
    "device",
    "batch_size",
    "cache",
    "cache_dir",
    "data",
    "data.stimuli",
    "data.responses",
    "data.response_ids",
    "data.test_fraction",
    "data.split_seed",
    "data.categories",
    "data.preferred_category",
    "backbone",
    "backbone.name",
    "backbone.model",
    "backbone.layer",
    "backbone.input_size",
    "backbone.mean",
    "backbone.weights",
    "backbone.weights_file",
    "readout",
    "readout.name",
    "readout.folds",
    "readout.alphas",
    "matcher",
    "methods",
    "methods.0",
    "methods.1.n_steps",
    "metrics",
    "metrics.1.steps",
    "selection",
    "selection.neurons",
    "selection.top_k",
    "selection.min_r",
    "attribution.reduce",
    "synthesis",
    "evaluators",
    "output",
    "output.dpi",
    "unknown_key",
    "data.unknown",
    "backbone.unknown",
    "selection.unknown",
]
COMPONENT_NAME_FIELDS = [
    "backbone.name",
    "readout.name",
    "matcher",
    "methods.0",
    "metrics.0.name",
    "synthesis.0.name",
    "evaluators.0.readout.name",
]


def _set(config: dict, dotted: str, value) -> None:
    """Set (or, with value ``...``, delete) ``config[a][b]...``; missing tables and list items are made.

    A path through a value of another type (a list where a table is, ...) leaves the config as it is.
    """
    keys = [int(k) if k.isdigit() else k for k in dotted.split(".")]
    node = config
    for key, following in zip(keys, keys[1:]):
        if isinstance(node, list) and isinstance(key, int):
            while len(node) <= key:
                node.append({"name": "saliency"})
            child = node[key]
        elif isinstance(node, dict) and isinstance(key, str):
            child = node.get(key)
        else:
            return
        if not isinstance(child, (dict, list)):
            child = [] if isinstance(following, int) else {}
            node[key] = child
        node = child
    last = keys[-1]
    if isinstance(node, list) and isinstance(last, int):
        while len(node) <= last:
            node.append("saliency")
        if value is ...:
            del node[last]
        else:
            node[last] = value
    elif isinstance(node, dict) and isinstance(last, str):
        if value is ...:
            node.pop(last, None)
        else:
            node[last] = value


MUTATIONS = st.lists(
    st.one_of(
        st.tuples(st.sampled_from(FIELDS), JSON_VALUES),
        st.tuples(st.sampled_from(FIELDS), st.just(...)),
        st.tuples(st.sampled_from(COMPONENT_NAME_FIELDS), st.sampled_from(HOSTILE_NAMES)),
    ),
    min_size=1,
    max_size=4,
)


@FUZZ
@given(mutations=MUTATIONS, suffix=st.sampled_from(SUFFIXES))
def test_random_config_trees_validate_or_name_file_and_field(tiny_config, tmp_path, capsys, mutations, suffix):
    config = copy.deepcopy(tiny_config)
    for field, value in mutations:
        _set(config, field, value)
    try:
        path = write_config(fresh(tmp_path, f"exp{suffix}"), config)
    except (ValueError, TypeError, yaml.YAMLError, UnicodeEncodeError):
        return  # not representable in this format
    check_config(path, capsys)


def _corrupt(text: str, data: st.DataObject) -> str:
    """``text`` with a random slice deleted, replaced or duplicated."""
    if not text:
        return text
    i = data.draw(st.integers(0, len(text) - 1))
    j = data.draw(st.integers(i, min(len(text), i + 40)))
    op = data.draw(st.sampled_from(["delete", "replace", "duplicate", "truncate"]))
    if op == "delete":
        return text[:i] + text[j:]
    if op == "replace":
        return text[:i] + data.draw(st.text(max_size=8)) + text[j:]
    if op == "duplicate":
        return text[:j] + text[i:j] + text[j:]
    return text[:i]


@FUZZ
@given(suffix=st.sampled_from(SUFFIXES), data=st.data())
def test_corrupted_config_text_fails_cleanly(tiny_config, tmp_path, capsys, suffix, data):
    path = fresh(tmp_path, f"exp{suffix}")
    text = write_config(path, tiny_config).read_text()
    path.write_text(_corrupt(_corrupt(text, data), data), encoding="utf-8", errors="surrogatepass")
    check_config(path, capsys)


@FUZZ
@given(suffix=st.sampled_from(SUFFIXES), raw=st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_random_bytes_as_config_fail_cleanly(tmp_path, capsys, suffix, raw):
    path = fresh(tmp_path, f"exp{suffix}")
    path.write_bytes(raw)
    assert check_config(path, capsys) is None


def _alias_bomb(levels: int) -> str:
    lines = ['a0: &a0 ["x", "x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, levels)]
    return "\n".join(lines) + f"\nmethods: *a{levels - 1}\n"


def _merge_bomb(levels: int) -> str:
    """Each level merges the previous mapping twice: PyYAML's merge doubles the pairs it constructs per level."""
    lines = ["a0: &a0 {k: 1}"]
    lines += [f"a{i}: &a{i}\n  <<: [*a{i - 1}, *a{i - 1}]\n  k{i}: {i}" for i in range(1, levels)]
    return "\n".join(lines) + "\nname: bomb\n"


@pytest.mark.parametrize(
    ("name", "text", "fragment"),
    [
        ("merge-bomb.yaml", _merge_bomb(40), "its merge keys (<<) expand to more than 100000 values"),
        ("bigint.json", '{"seed": ' + "9" * 5000 + "}", "invalid JSON: an integer has more than 4300 digits"),
        ("bigint.toml", "seed = " + "9" * 5000 + "\n", "invalid TOML: an integer has more than 4300 digits"),
        ("bigint.yaml", "seed: " + "9" * 5000 + "\n", "invalid YAML: an integer has more than 4300 digits"),
        ("deep.json", "[" * 5_000 + "]" * 5_000, "nested too deeply"),
        ("deep2.json", '{"a": ' * 200 + "1" + "}" * 200, "nested more than 64 levels deep"),
        ("deep.yaml", "[" * 700 + "]" * 700, "nested too deeply"),
        ("deep.toml", "a = " + "[" * 5_000 + "]" * 5_000, "nested too deeply"),
        ("deep2.toml", "a = " + "{b = " * 3_000 + "1" + "}" * 3_000, "nested too deeply"),
        ("self.yaml", "name: x\nmethods: &m [saliency, *m]\n", "methods[1]: refers to itself"),
        ("bomb.yaml", _alias_bomb(8), "more than 100000 values once its YAML aliases are expanded"),
        ("surrogate.json", '{"name": "\\ud800"}', "name: not valid Unicode text"),
        ("latin1.yaml", "name: caf\xe9\n".encode("latin-1"), "not UTF-8 text"),
        ("bom.json", "\ufeff{}", "invalid JSON"),
    ],
)
def test_pathological_config_files(tmp_path, capsys, name, text, fragment):
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8", "surrogatepass"))
    with pytest.raises(ConfigError, match=re.escape(fragment)) as info:
        load_experiment(path)
    assert str(info.value).startswith(str(path))
    assert check_config(path, capsys) is None


def test_shared_yaml_aliases_are_fine(tiny_config, tmp_path):
    """Aliases are ordinary YAML: a shared table or list, in any order of first use, parses and validates."""
    text = yaml.safe_dump(tiny_config).replace("methods:", "methods: &m", 1)
    text += "x_shared: [*m, *m]\n"  # an unknown key (below) that reuses the anchored list twice
    path = tmp_path / "exp.yaml"
    path.write_text(text)
    with pytest.raises(SpecError) as info:
        load_experiment(path)
    assert [i.loc for i in info.value.issues] == ["x_shared"]
    (tmp_path / "merged.yaml").write_text("base: &b {x: 1, y: 2}\nmore:\n  <<: [*b, *b]\n  z: 3\n")
    from sharedattr.config.files import read_config

    assert read_config(tmp_path / "merged.yaml")["more"] == {"x": 1, "y": 2, "z": 3}  # merge keys still work
    (tmp_path / "plain.yaml").write_text("a: &s [1, [2]]\nb: [*s]\nc: [*s, {k: *s}]\n")
    assert read_config(tmp_path / "plain.yaml") == {"a": [1, [2]], "b": [[1, [2]]], "c": [[1, [2]], {"k": [1, [2]]}]}


@pytest.mark.parametrize(
    ("edit", "loc", "fragment"),
    [
        ({"seed": 2**70}, "seed", "less than or equal to 9223372036854775807"),
        ({"seed": -1}, "seed", "greater than or equal to 0"),
        ({"batch_size": 10**40}, "batch_size", "less than or equal to 2147483647"),
        ({"data.split_seed": 2**64}, "data.split_seed", "less than or equal to"),
        ({"selection.neurons": []}, "selection.neurons", "at least 1 item"),
        ({"selection.neurons": ["limbs", "head", "limbs"]}, "selection.neurons", "'limbs' appear more than once"),
        ({"backbone.input_size": 0}, "backbone.input_size", "between 1 and 4096"),
        ({"backbone.input_size": 10**6}, "backbone.input_size", "between 1 and 4096"),
        ({"backbone.mean": [float("nan")] * 3}, "backbone.mean[0]", "finite number"),
        ({"backbone.std": [0.2, 0.0, 0.2]}, "backbone.std", "std must be > 0"),
        ({"backbone.seed": 2**64}, "backbone.seed", "less than or equal to"),
        ({"backbone": {"name": "insilico_cnn", "input_size": 5000}}, "backbone.input_size", "at most 4096"),
        ({"backbone": {"name": "insilico_cnn", "std": [float("inf")]}}, "backbone.std[0]", "finite number"),
    ],
)
def test_out_of_range_settings_are_spec_errors(tiny_config, tmp_path, capsys, edit, loc, fragment):
    for field, value in edit.items():
        _set(tiny_config, field, value)
    path = write_config(tmp_path / "exp.json", tiny_config)
    with pytest.raises(SpecError) as info:
        load_experiment(path)
    assert any(i.loc == loc and fragment in i.message for i in info.value.issues), info.value
    assert check_config(path, capsys) is None


def test_a_very_long_path_is_a_spec_error(tiny_config, tmp_path):
    tiny_config["data"]["responses"] = "r" * 5000 + ".csv"
    with pytest.raises(SpecError, match="data.responses"):
        load_experiment(write_config(tmp_path / "exp.json", tiny_config))


# -- (b) images ------------------------------------------------------------------------------------------
def _image(mode: str, size: tuple[int, int] = (7, 5)) -> Image.Image:
    """A deterministic image of ``mode`` (width, height ``size``) with varied pixel values."""
    w, h = size
    ramp = np.arange(w * h, dtype=np.float64).reshape(h, w) / max(1, w * h - 1)
    if mode == "1":
        return Image.fromarray(ramp > 0.5)
    if mode in ("L", "P"):
        im = Image.fromarray((ramp * 255).astype(np.uint8))
        return im if mode == "L" else im.convert("P")
    if mode == "P+transparency":
        im = Image.fromarray((ramp * 255).astype(np.uint8)).convert("P")
        im.info["transparency"] = 0
        return im
    if mode in ("LA", "RGB", "RGBA", "CMYK"):
        arr = np.stack([(ramp * 255).astype(np.uint8)] * len(mode), axis=-1)
        arr[..., -1] = 0 if mode == "CMYK" else 255 - arr[..., -1]  # no black ink; alpha (or blue) reversed
        return Image.fromarray(arr, mode)
    if mode == "I;16":
        return Image.fromarray((ramp * 65535).astype(np.uint16))
    if mode == "I":
        return Image.fromarray((ramp * 65535).astype(np.int32))
    if mode == "F":
        return Image.fromarray(ramp.astype(np.float32))
    raise AssertionError(mode)


MODE_FILES = {
    "1": "png",
    "L": "png",
    "P": "png",
    "P+transparency": "png",
    "LA": "png",
    "RGB": "jpg",
    "RGBA": "png",
    "CMYK": "jpg",
    "I;16": "png",
    "I": "tif",
    "F": "tif",
}


def _one(path: Path) -> StimulusSet:
    return StimulusSet((path.stem,), (path,), ("c",), (None,))


@pytest.mark.parametrize("mode", MODE_FILES)
@pytest.mark.parametrize("channels", [1, 3])
def test_every_image_mode_loads_as_finite_pixels_in_0_1(tmp_path, mode, channels):
    path = tmp_path / f"im.{MODE_FILES[mode]}"
    _image(mode).save(path)
    stimuli = _one(path)
    stimuli.check_images()
    x = stimuli.load_images((4, 6), channels)
    assert x.shape == (1, channels, 4, 6) and torch.isfinite(x).all() and x.min() >= 0 and x.max() <= 1
    assert x.max() - x.min() > 0.3, "the pixel range survived the conversion (no clipping to black or white)"


def test_high_depth_grey_is_scaled_not_clipped(tmp_path):
    full = np.array([[0, 16384, 32768, 65535]], dtype=np.uint16)
    for name, im, expected in [
        ("a.png", Image.fromarray(full), full / 65535),
        ("b.tif", Image.fromarray(full.astype(np.int32)), full / 65535),
        ("c.tif", Image.fromarray(np.array([[0.0, 0.25, 0.5, 1.0]], dtype=np.float32)), [[0, 0.25, 0.5, 1]]),
    ]:
        im.save(tmp_path / name)
        x = _one(tmp_path / name).load_images((1, 4), 1)
        torch.testing.assert_close(x[0, 0], torch.tensor(expected, dtype=torch.float32), atol=1e-4, rtol=0)


def test_alpha_is_dropped_and_odd_sizes_resize(tmp_path):
    rgb, rgba = _image("RGB"), _image("RGBA")
    rgb.save(tmp_path / "rgb.png")
    Image.merge("RGBA", (*rgb.split(), rgba.split()[-1])).save(tmp_path / "rgba.png")
    a, b = (_one(tmp_path / n).load_images((5, 7), 3) for n in ("rgb.png", "rgba.png"))
    assert torch.equal(a, b)  # the alpha channel is ignored, not composited
    for size in [(1, 1), (1000, 2), (2, 1000)]:
        Image.new("RGB", size, (10, 200, 30)).save(tmp_path / "odd.png")
        x = _one(tmp_path / "odd.png").load_images((8, 8), 3)
        torch.testing.assert_close(x[0, :, 4, 4], torch.tensor([10, 200, 30]) / 255.0)


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` × ``height`` pixels, with almost no pixel data."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


def _write_bad(path: Path, kind: str) -> str:
    """Write a hostile image file; return a fragment of the message expected for it."""
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8))
    if kind == "truncated png":  # incompressible pixels, cut in the middle of the pixel data
        good = io.BytesIO()
        noise.save(good, format="PNG")
        path.write_bytes(good.getvalue()[: len(good.getvalue()) // 2])
        return "cannot decode image"
    if kind == "truncated jpeg":
        jpeg = io.BytesIO()
        noise.save(jpeg, format="JPEG")
        path.write_bytes(jpeg.getvalue()[: len(jpeg.getvalue()) // 2])
        return "cannot decode image"
    if kind == "empty":
        path.write_bytes(b"")
        return "cannot decode image"
    if kind == "text":
        path.write_text("stimulus_id,path\n")
        return "cannot decode image"
    if kind == "decompression bomb":
        path.write_bytes(_png_header_only(100_000, 100_000))
        return "DecompressionBombError"
    if kind == "huge header, little data":
        path.write_bytes(_png_header_only(4_000, 4_000))
        return "cannot decode image"
    if kind == "NaN pixels":
        Image.fromarray(np.full((4, 4), np.nan, dtype=np.float32)).save(path.with_suffix(".tif"))
        path.with_suffix(".tif").rename(path)
        return "16 NaN or infinite pixel value(s)"
    if kind == "float out of range":
        Image.fromarray(np.full((4, 4), 200.0, dtype=np.float32)).save(path.with_suffix(".tif"))
        path.with_suffix(".tif").rename(path)
        return "float (mode F) pixels range from 200 to 200"
    if kind == "int32 out of range":
        Image.fromarray(np.full((4, 4), -5, dtype=np.int32)).save(path.with_suffix(".tif"))
        path.with_suffix(".tif").rename(path)
        return "32-bit integer (mode I) pixels range from -5 to -5"
    raise AssertionError(kind)


BAD_IMAGES = [
    "truncated png",
    "truncated jpeg",
    "empty",
    "text",
    "decompression bomb",
    "huge header, little data",
    "NaN pixels",
    "float out of range",
    "int32 out of range",
]


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_hostile_images_are_all_listed_with_their_files(tmp_path):
    paths = []
    expected = {}
    for i, kind in enumerate(BAD_IMAGES):
        path = tmp_path / f"bad{i}.png"
        expected[path] = _write_bad(path, kind)
        paths.append(path)
    _image("RGB").save(tmp_path / "good.png")
    stimuli = StimulusSet(
        tuple(p.stem for p in paths) + ("good",),
        (*paths, tmp_path / "good.png"),
        ("c",) * (len(paths) + 1),
        (None,) * (len(paths) + 1),
    )
    for check in (stimuli.check_images, lambda: stimuli.load_images((4, 4), 3)):
        with pytest.raises(DataError) as info:
            check()
        assert len(info.value.problems) == len(BAD_IMAGES), info.value
        for problem, path in zip(info.value.problems, paths):
            assert problem.startswith(f"{path.stem}: ") and str(path) in problem, problem
            if check is stimuli.check_images:
                assert expected[path] in problem, problem


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
@FUZZ
@given(fmt=st.sampled_from(["PNG", "JPEG", "GIF", "TIFF", "BMP", "WEBP"]), data=st.data())
def test_mangled_image_bytes_decode_or_are_reported(tmp_path, monkeypatch, fmt, data):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1_000_000)  # a flipped size byte must not allocate GBs
    buf = io.BytesIO()
    _image("RGB" if fmt != "GIF" else "P", (12, 9)).save(buf, format=fmt)
    raw = bytearray(buf.getvalue())
    for _ in range(data.draw(st.integers(1, 4))):
        op = data.draw(st.sampled_from(["flip", "truncate", "insert"]))
        i = data.draw(st.integers(0, max(0, len(raw) - 1)))
        if op == "flip" and raw:
            raw[i] = data.draw(st.integers(0, 255))
        elif op == "truncate":
            del raw[i:]
        else:
            raw[i:i] = data.draw(st.binary(min_size=1, max_size=16))
    path = fresh(tmp_path, f"im.{fmt.lower()}")
    path.write_bytes(bytes(raw))
    stimuli = _one(path)
    try:
        stimuli.check_images()
        x = stimuli.load_images((6, 6), 3)
    except DataError as err:
        assert str(path) in str(err) and err.problems[0].startswith(f"{path.stem}: ")
    else:
        assert torch.isfinite(x).all() and x.min() >= 0 and x.max() <= 1


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (b"stimulus_id,path,category\n\xff\xfe,a.png,c\n", "not UTF-8 text"),
        (b'stimulus_id,path,category\ns0,"' + b"x" * 200_000 + b'",c\n', "not a readable CSV file"),
        (b"stimulus_id,path,category\ns0," + b"p" * 5000 + b".png,c\n", "line 2: image not found"),
        (b"stimulus_id,path,category\ns0,a\x00.png,c\n", "line 2: image not found"),
        (b"\x89PNG\r\n\x1a\n\x00\x00", "not UTF-8 text"),
        (b"", "missing column(s) category, path, stimulus_id"),
    ],
)
def test_hostile_manifests_are_data_errors(tmp_path, content, fragment):
    path = tmp_path / "manifest.csv"
    path.write_bytes(content)
    with pytest.raises(DataError, match=re.escape(fragment)) as info:
        StimulusSet.load(path)
    assert str(info.value).startswith(str(path))


@FUZZ
@given(text=st.text(max_size=300))
def test_random_manifests_load_or_are_data_errors(tmp_path, text):
    path = fresh(tmp_path, "manifest.csv")
    path.write_text("stimulus_id,path,category,mask\n" + text, encoding="utf-8", errors="surrogatepass")
    try:
        StimulusSet.load(path)
    except DataError as err:
        assert str(err).startswith(str(path))


def test_a_corrupt_mask_is_listed_before_compute(tmp_path):
    _image("RGB").save(tmp_path / "a.png")
    (tmp_path / "m.png").write_bytes(b"\x89PNG broken")
    stimuli = StimulusSet(("a",), (tmp_path / "a.png",), ("c",), (tmp_path / "m.png",))
    with pytest.raises(DataError, match=r"a: mask: cannot decode mask .*m\.png"):
        stimuli.check_images()
    with pytest.raises(DataError, match=r"cannot decode mask .*m\.png"):
        stimuli.load_masks((4, 4))


def _copy_data(tiny_data: Path, tmp_path: Path) -> Path:
    shutil.copytree(tiny_data, tmp_path / "data")
    return tmp_path / "data"


def _fit_config(tiny_config: dict, data: Path, **data_fields) -> dict:
    config = copy.deepcopy(tiny_config)
    config["data"] = {
        "stimuli": str(data / "stimuli" / "manifest.csv"),
        "responses": str(data / "responses.csv"),
        **data_fields,
    }
    return config


def _scores(out: Path) -> list[dict[str, str]]:
    text = (out / "scores.csv").read_text()
    assert not re.search(r"\b(nan|inf)\b", text, re.IGNORECASE), text
    return list(csv.DictReader(io.StringIO(text)))


def test_odd_image_modes_and_sizes_fit_end_to_end(one_thread, tiny_data, tiny_config, tmp_path, capsys):
    """`sharedattr fit` on a stimulus set whose images come in every odd mode and size: exit 0, no NaN scores."""
    data = _copy_data(tiny_data, tmp_path)
    images = sorted((data / "stimuli" / "images").glob("*.png"))
    odd = {
        "1": "PNG",
        "P": "PNG",
        "P+transparency": "PNG",
        "LA": "PNG",
        "RGBA": "PNG",
        "I;16": "PNG",
        "I": "TIFF",
        "F": "TIFF",
        "CMYK": "JPEG",
    }  # the file name stays .png: Pillow reads the content
    for path, (mode, fmt) in zip(images, odd.items()):
        with Image.open(path) as im:
            grey = np.asarray(im.convert("L"), dtype=np.float64) / 255
        if mode in ("I;16", "I", "F"):
            dtype = {"I;16": np.uint16, "I": np.int32, "F": np.float32}[mode]
            converted = Image.fromarray((grey * (1 if mode == "F" else 65535)).astype(dtype))
        else:
            converted = Image.fromarray((grey * 255).astype(np.uint8)).convert(mode.split("+")[0])
        converted.save(path, format=fmt, **({"transparency": 0} if mode == "P+transparency" else {}))
        with Image.open(path) as im:
            assert im.mode == mode.split("+")[0]
    Image.new("RGB", (1, 1), (40, 50, 60)).save(images[8])
    Image.new("RGB", (1000, 2), (40, 50, 60)).save(images[9])
    config = _fit_config(tiny_config, data)
    path = write_config(tmp_path / "exp.json", config)
    code = main(["fit", str(path), "--out", str(tmp_path / "out"), "--no-progress"])
    assert code == 0, capsys.readouterr().err
    assert all(float(r["test_r"]) <= 1 for r in _scores(tmp_path / "out"))


# -- (c) responses ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("cell", "fragment"),
    [
        ("inf", "infinite response"),
        ("-Infinity", "infinite response"),
        ("1e300", "1e300 is too large"),
        ("-1e300", "-1e300 is too large"),
        ("1e38", "1e38 is too large"),
        ("3e15", "3e15 is too large"),
    ],
)
def test_csv_extreme_values_are_listed_with_line_and_neuron(tmp_path, cell, fragment):
    path = tmp_path / "r.csv"
    path.write_text(f"stimulus_id,n_a,n_b\ns0,1,2\ns1,{cell},3\ns2,2,1\n")
    with pytest.raises(DataError) as info:
        load_responses(path)
    assert str(info.value).startswith(f"{path}: 1 problem(s)")
    assert f"line 3, neuron n_a: {fragment}" in str(info.value)


@pytest.mark.filterwarnings("error")  # no silent overflow when casting to float32
@pytest.mark.parametrize("value", [1e300, -1e39, 2e15])
def test_npy_values_beyond_float32_or_the_limit_are_refused(tmp_path, value):
    array = np.ones((3, 2))
    array[1, 1] = value
    np.save(tmp_path / "r.npy", array)
    (tmp_path / "ids.txt").write_text("a\nb\nc\n")
    with pytest.raises(DataError, match=r"neuron 1: 1 value\(s\) too large .*first for stimulus_id 'b'"):
        load_responses(tmp_path / "r.npy", ids_path=tmp_path / "ids.txt")


FLOATS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True, width=64),
    st.sampled_from([0.0, 1e-45, -1e-38, 1e15, -1e15, 1e15 * (1 + 1e-9), 3.4e38, 1e300, math.nan]),
)


@FUZZ
@given(
    values=st.lists(st.lists(FLOATS, min_size=2, max_size=2), min_size=2, max_size=6),
    predicted=st.lists(st.floats(-1e6, 1e6), min_size=6, max_size=6),
)
def test_any_csv_numbers_load_cleanly_and_score_finitely(tmp_path, values, predicted):
    path = fresh(tmp_path, "r.csv")
    path.write_text("stimulus_id,n_a,n_b\n" + "".join(f"s{i},{a!r},{b!r}\n" for i, (a, b) in enumerate(values)))
    try:
        recorded = load_responses(path)
    except DataError as err:
        assert str(err).startswith(f"{path}: ")
        return
    trials = recorded.trials
    finite = trials[~torch.isnan(trials)]
    assert torch.isfinite(finite).all() and finite.abs().max() <= MAX_ABS_RESPONSE
    pred = torch.tensor(predicted[: len(recorded.ids)], dtype=torch.float32)[:, None].expand(-1, 2)
    r, notes = held_out_r(pred, recorded.values)
    assert torch.isfinite(r).all() and (r.abs() <= 1).all() and len(notes) == 2


def test_held_out_r_is_scale_free_and_explains_undefined_values():
    torch.manual_seed(0)
    measured = torch.randn(30, 1)
    predicted = measured + 0.5 * torch.randn(30, 1)
    r, _ = held_out_r(predicted, measured)
    for scale in (1e-30, 1e-7, 1e7, 1e15):  # float32 sums of squares over- or underflow at these scales
        scaled, notes = held_out_r(predicted * scale, measured * scale)
        torch.testing.assert_close(scaled, r, atol=1e-5, rtol=0)
        assert notes == [None]
    constant = torch.cat([measured, torch.full((30, 1), 3.0), measured], 1)
    constant[:29, 2] = math.nan
    r, notes = held_out_r(torch.cat([predicted, predicted, predicted], 1), constant)
    assert r[1] == 0 and r[2] == 0 and notes[0] is None
    assert notes[1] == "test_r undefined (held-out responses constant), reported as 0"
    assert notes[2] == "test_r undefined (1 held-out stimuli measured), reported as 0"


def _rewrite_responses(data: Path, edit) -> list[str]:
    """Apply ``edit(header, rows)`` to the tiny responses.csv (rows as lists of strings); return the header."""
    with open(data / "responses.csv") as f:
        rows = list(csv.reader(f))
    header, body = rows[0], rows[1:]
    edit(header, body)
    with open(data / "responses.csv", "w", newline="") as f:
        csv.writer(f).writerows([header, *body])
    return header


def test_fit_with_extreme_but_legal_responses_writes_no_nan(one_thread, tiny_data, tiny_config, tmp_path):
    """Constant, tiny-scale, huge-scale and NaN-riddled neurons fit; r is scale-free and undefined r explained."""
    data = _copy_data(tiny_data, tmp_path)

    def edit(header, body):
        header += ["tiny", "huge", "constant", "holey"]
        for i, row in enumerate(body):
            limbs = float(row[1])
            row += [f"{limbs * 1e-30:.6e}", f"{limbs * 1e14:.6e}", "2.5", "nan" if i % 3 else f"{limbs:.6f}"]

    _rewrite_responses(data, edit)
    fit_experiment(validate_experiment(_fit_config(tiny_config, data)), tmp_path / "out", progress=False)
    rows = {r["neuron"]: r for r in _scores(tmp_path / "out")}
    assert all(r["test_r"] != "" for r in rows.values())
    for scaled in ("tiny", "huge"):
        assert float(rows[scaled]["test_r"]) == pytest.approx(float(rows["limbs"]["test_r"]), abs=2e-3)
    assert float(rows["constant"]["test_r"]) == 0
    assert rows["constant"]["note"].startswith("test_r undefined (held-out responses constant), reported as 0")
    assert math.isfinite(float(rows["holey"]["test_r"]))


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda h, b: [r.__setitem__(5, "1e300") for r in b[:1]], "line 2, neuron shape: 1e300 is too large"),
        (lambda h, b: [r.__setitem__(5, "nan") for r in b[2:]], "fewer than 2 training stimuli"),
        (lambda h, b: [r.__setitem__(5, "") for r in b], "neuron shape: no valid (non-NaN) response"),
        (lambda h, b: [r.__setitem__(0, "ghost_" + r[0]) for r in b], "stimulus_id 'ghost_bodies_0000' is not in"),
        (lambda h, b: h.__setitem__(2, " limbs "), "duplicate neuron id(s): 'limbs'"),
    ],
)
def test_fit_refuses_unusable_responses_before_compute(
    one_thread, tiny_data, tiny_config, tmp_path, capsys, edit, expected
):
    data = _copy_data(tiny_data, tmp_path)
    _rewrite_responses(data, edit)
    path = write_config(tmp_path / "exp.json", _fit_config(tiny_config, data))
    code = main(["fit", str(path), "--out", str(tmp_path / "out"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and "Traceback" not in err, err
    assert expected in err
    assert not (tmp_path / "out" / "scores.csv").exists()


# -- (d) ids that do not match ------------------------------------------------------------------------------
def test_unknown_selected_neurons_fail_before_feature_extraction(tiny_config, tmp_path, capsys, monkeypatch):
    import sharedattr.experiment.stages as stages

    def no_compute(*args, **kwargs):
        raise AssertionError("features extracted before the neuron ids were checked")

    monkeypatch.setattr(stages, "extract_features", no_compute)
    tiny_config["selection"] = {"neurons": ["limbz", "head", "zzz"]}
    path = write_config(tmp_path / "exp.json", tiny_config)
    code = main(["run", str(path), "--out", str(tmp_path / "out"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err, err
    assert (
        "selection.neurons: unknown neuron id(s) ['limbz', 'zzz'] (did you mean 'limbs' for 'limbz'?); "
        "the responses" in err
    )
    assert str(tiny_config["data"]["responses"]) in err


def test_unknown_preferred_category_fails_before_feature_extraction(tiny_config, tmp_path, capsys, monkeypatch):
    import sharedattr.experiment.stages as stages

    monkeypatch.setattr(stages, "extract_features", lambda *a, **k: pytest.fail("features extracted"))
    tiny_config["data"]["preferred_category"] = "body"
    code = main(["fit", str(write_config(tmp_path / "exp.json", tiny_config)), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err, err
    assert "data.preferred_category: 'body' is not one of ['bodies', 'objects']; did you mean 'bodies'?" in err


def test_responses_for_a_subset_of_stimuli_and_odd_neuron_ids(one_thread, tiny_data, tiny_config, tmp_path):
    """Stimuli without responses are left out of the fit; neuron ids with commas, quotes and unicode survive."""
    data = _copy_data(tiny_data, tmp_path)
    names = ["a,b", 'say "hi"', "ünï cödé", "tab\tid", "limbs"]

    def edit(header, body):
        header[1:] = names
        body[:] = [r for r in body if not r[0].endswith(("1", "2"))]

    _rewrite_responses(data, edit)
    experiment = fit_experiment(validate_experiment(_fit_config(tiny_config, data)), tmp_path / "out", progress=False)
    assert [r["neuron"] for r in _scores(tmp_path / "out")] == names
    measured = ~torch.isnan(experiment.responses).all(1)
    assert set(experiment.fit.train.tolist()) | set(experiment.fit.test.tolist()) == set(
        measured.nonzero().squeeze(1).tolist()
    )
    assert not measured.all()


@pytest.mark.parametrize("value", [float("inf"), float("-inf"), float("nan")])
def test_component_params_refuse_infinite_and_nan_numbers(tiny_config, tmp_path, value):
    tiny_config["readout"] = {"name": "ridge", "alphas": [1.0, value]}
    tiny_config["methods"] = [{"name": "integrated_gradients", "baseline": value}]
    with pytest.raises(SpecError) as info:
        load_experiment(write_config(tmp_path / "exp.json", tiny_config))
    locs = {i.loc for i in info.value.issues}
    assert any(loc.startswith("readout") for loc in locs) and any(loc.startswith("methods[0]") for loc in locs)
    assert all("finite number" in i.message for i in info.value.issues), info.value


@pytest.mark.parametrize("scale", [1e-9, 1e-6, 1.0, 1e6, 1e12])
def test_held_out_pearson_is_the_same_in_any_units(scale):
    from sharedattr.encoding.scores import pearson_columns

    g = torch.Generator().manual_seed(0)
    truth = torch.randn(50, 3, generator=g)
    predicted = truth + 0.5 * torch.randn(50, 3, generator=g)
    expected = pearson_columns(predicted, truth)
    r = pearson_columns(predicted * scale, truth * scale)
    torch.testing.assert_close(r, expected, rtol=1e-5, atol=1e-6)
    assert r.dtype == torch.float32 and (r > 0.5).all()
    assert pearson_columns(torch.ones(50, 1) * scale, truth[:, :1]).item() == 0.0  # constant: 0, never NaN


@pytest.mark.parametrize("where", ["readout", "metrics"])
def test_component_seeds_are_bounded_like_the_spec_seeds(tiny_config, tmp_path, where):
    if where == "readout":
        tiny_config["readout"] = {"name": "ridge", "seed": 10**30}
    else:
        tiny_config["metrics"] = [{"name": "randomisation", "seed": -1}]
    with pytest.raises(SpecError) as info:
        load_experiment(write_config(tmp_path / "exp.json", tiny_config))
    assert [i.loc for i in info.value.issues] == [
        f"{where}.seed" if where == "readout" else "metrics[0] (randomisation).seed"
    ]


@pytest.mark.parametrize(
    ("kind", "component", "field", "value"),
    [
        ("methods", {"name": "integrated_gradients"}, "n_steps", 10**9),
        ("methods", {"name": "smoothgrad"}, "samples", 10**9),
        ("methods", {"name": "gradient_shap"}, "n_samples", 4097),
        ("methods", {"name": "parallel_backprop", "path": "ig"}, "n_steps", 10**6),
        ("synthesis", {"name": "gradient_ascent"}, "n_seeds", 10**6),
        ("synthesis", {"name": "gradient_ascent"}, "steps", 10**9),
    ],
)
def test_unbounded_work_is_a_spec_error_at_the_field(tiny_config, kind, component, field, value):
    """A count that would validate and then exhaust memory (n_steps = 1e9) is refused where it is written."""
    from sharedattr.config.validation import validate_experiment
    from sharedattr.runtime.errors import SpecError

    config = copy.deepcopy(tiny_config)
    config[kind] = [{**component, field: value}]
    with pytest.raises(
        SpecError, match=rf"{kind}\[0\] \({component['name']}\)\.{field}: Input should be less than or equal to"
    ):
        validate_experiment(config)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ('{"n1": {"head": ' + "9" * 5000 + "}}", "not valid JSON: Exceeds the limit (4300 digits)"),
        ('{"n1": ' + "[" * 100_000 + "]" * 100_000 + "}", "nested too deeply"),
    ],
)
def test_hostile_neuron_parts_are_data_errors(tmp_path, text, fragment):
    from sharedattr.data.ground_truth import load_neuron_parts
    from sharedattr.runtime.errors import DataError

    path = tmp_path / "neuron_parts.json"
    path.write_text(text)
    with pytest.raises(DataError, match=re.escape(fragment)) as info:
        load_neuron_parts(path, ["head", "limbs"])
    assert str(path) in str(info.value)


def test_a_corrupt_mask_is_refused_with_the_feature_cache_warm(one_thread, tiny_data, tiny_config, tmp_path, capsys):
    """The cache covers the images, not the masks: a mask broken after the features were cached is still listed."""
    data = _copy_data(tiny_data, tmp_path)
    config = write_config(tmp_path / "c.json", {**_fit_config(tiny_config, data), "cache_dir": str(tmp_path / "c")})
    assert main(["fit", str(config), "--out", str(tmp_path / "cold"), "--no-progress"]) == 0
    mask = data / "stimuli" / "masks" / "bodies_0000.png"
    mask.write_bytes(b"\x89PNG broken")
    capsys.readouterr()
    assert main(["fit", str(config), "--out", str(tmp_path / "warm"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "bodies_0000: mask: cannot decode mask" in err and "Traceback" not in err, err
