"""The run folder's contract (sharedattr.runtime.run_files): one schema for the writers and the readers."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest

from sharedattr.runtime import run_files
from sharedattr.runtime.errors import UserError
from sharedattr.runtime.run_files import (
    FIT_SCORES,
    PAIRS,
    RESULTS,
    SUMMARY,
    SYNTHESIS_SCORES,
    Column,
    RunFolderError,
    Table,
)


def test_the_schema_imports_neither_torch_nor_matplotlib():
    code = "import sys, sharedattr.runtime.run_files; print(sorted({'torch', 'matplotlib'} & set(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_each_table_has_its_own_name_and_columns():
    tables = [t for t in vars(run_files).values() if isinstance(t, Table)]
    assert len(tables) == 11  # 9, priors.csv and equal_activation.csv (issue 27)
    assert len({id(t) for t in tables}) == len(tables)
    for table in tables:
        assert len(set(table.header)) == len(table.header), table.name
    assert FIT_SCORES.name == SYNTHESIS_SCORES.name == "scores.csv" and FIT_SCORES.header != SYNTHESIS_SCORES.header
    assert RESULTS.header[: len(PAIRS.header) - 1] == PAIRS.header[:-1], "a pair is named alike in both"


def test_the_model_record_is_where_the_store_writes_it():
    from sharedattr.encoding.store import MODEL_FILE

    assert run_files.MODEL_RECORD == f"{run_files.MODEL_DIR}/{MODEL_FILE}"


def test_rows_are_parsed_once_into_typed_values(tmp_path):
    written = [
        {
            "method": "a",
            "image": "driver",
            "metric": "m",
            "mean": 0.5,
            "sem": math.nan,
            "n": 3,
            "higher_is_better": True,
        },
        {"method": "b", "image": "driver", "metric": "m", "mean": None, "sem": 0.1, "n": 0, "higher_is_better": False},
    ]
    SUMMARY.write(tmp_path, written)
    assert (tmp_path / "summary.csv").read_text().splitlines()[1:] == [
        "a,driver,m,0.5,nan,3,True",
        "b,driver,m,,0.1,0,False",
    ]
    first, second = SUMMARY.read(tmp_path)
    assert {k: v for k, v in first.items() if k != "sem"} == {k: v for k, v in written[0].items() if k != "sem"}
    assert math.isnan(first["sem"]) and type(first["n"]) is int and first["higher_is_better"] is True
    assert math.isnan(second["mean"]) and second["sem"] == 0.1 and second["higher_is_better"] is False
    assert SUMMARY.read(tmp_path / "nowhere") is None


def test_an_optional_column_an_older_file_lacks_reads_as_empty(tmp_path):
    (tmp_path / "scores.csv").write_text("neuron,test_r\nn0,0.5\nn1,\n", encoding="utf-8")
    rows = FIT_SCORES.read(tmp_path)
    assert [r["neuron"] for r in rows] == ["n0", "n1"] and rows[0]["test_r"] == 0.5 and math.isnan(rows[1]["test_r"])
    assert math.isnan(rows[0]["noise_ceiling"]) and rows[0]["n_train"] is None and rows[0]["note"] == ""


@pytest.mark.parametrize(
    "text, message",
    [
        ("neuron,test_r\nn0,fast\n", "scores.csv: damaged (row 2, column test_r: could not convert"),
        ("neuron,test_r,n_train\nn0,0.5,1.5\n", "scores.csv: damaged (row 2, column n_train: invalid literal"),
        ("neuron,test_r\nn0,0.5,9\n", "scores.csv: damaged (row 2 does not match the header)"),
        ("neuron,r\nn0,0.5\n", "scores.csv: lacks the column(s) test_r"),
        (b"neuron,test_r\n\xff\n", "scores.csv: damaged (UnicodeDecodeError"),
    ],
    ids=["not a number", "not an integer", "more cells", "a column missing", "not UTF-8"],
)
def test_a_file_that_does_not_fit_the_schema_is_a_one_line_error_naming_it(tmp_path, text, message):
    path = tmp_path / "scores.csv"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(RunFolderError) as err:
        FIT_SCORES.read(tmp_path)
    assert isinstance(err.value, UserError) and "\n" not in str(err.value)
    assert str(err.value).startswith(f"{path}:") and message in str(err.value)


def test_booleans_are_true_or_false():
    column = Column("higher_is_better", bool)
    assert [column.parse(t) for t in ("True", "false", "1", "0")] == [True, False, True, False]
    with pytest.raises(ValueError, match="is not True or False"):
        column.parse("maybe")


def test_writers_and_readers_round_trip_every_run_table(tmp_path):
    row = {"neuron": "n0", "driver": "d", "driver_category": "c", "reference": "r", "rank": 0, "similarity": 0.25}
    PAIRS.write(tmp_path, [{**row, "driver_response": 1.5}])
    RESULTS.write(
        tmp_path, [{**row, "method": "m", "image": "driver", "metric": "g", "value": 0.1, "higher_is_better": True}]
    )
    assert PAIRS.read(tmp_path) == [{**row, "driver_response": 1.5}]
    (result,) = RESULTS.read(tmp_path)
    assert result["rank"] == 0 and result["value"] == 0.1 and result["higher_is_better"] is True
    assert (tmp_path / "pairs.csv").read_text().splitlines()[0] == ",".join(PAIRS.header)
