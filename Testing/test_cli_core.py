"""`tucker-segment stats` and `compress` through the installed console script."""

import json

import pytest
from conftest import run_cli
from test_table1 import TABLE_1


def test_stats_json_is_one_list_of_rows():
    result = run_cli("stats", "--model", "3mm", "--paper", "--json", check=True)
    rows = json.loads(result.stdout)
    assert [set(row) for row in rows] == [{"df", "params", "gflops"}] * 9
    assert rows[0]["df"] == 1.0
    assert [round(row["gflops"], 2) for row in rows] == pytest.approx(TABLE_1["3mm"][1], abs=0.02)


def test_stats_table_with_chosen_dfs():
    result = run_cli(
        "stats", "--model", "1.5mm", "--expert", "ribs", "--df", "0.5", "0.25", check=True
    )
    lines = result.stdout.strip().splitlines()
    assert lines[0].startswith("1.5mm-ribs")
    assert [line.split()[0] for line in lines[2:]] == ["original", "0.5", "0.25"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["stats", "--df", "1.5"], "DF must be in (0, 1]"),
        (["stats", "--model", "1.5mm", "--expert", "brain"], "unknown expert 'brain'"),
        (["stats", "--expert", "ribs"], "--expert ribs is a 1.5 mm expert: add --model 1.5mm"),
        (["benchmark", "--expert", "ribs"], "--expert ribs is a 1.5 mm expert"),
        (["stats", "--model-dir", ".", "--expert", "ribs"], "drop it for --model-dir"),
        (["stats", "--rank-floor", "0"], "rank floor must be a positive integer"),
        (["compress", "--model-dir", "/nonexistent", "-o", "x"], "model folder not found"),
    ],
)
def test_bad_arguments_fail_with_one_clear_line(args, message):
    result = run_cli(*args)
    assert result.returncode != 0
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_compress_writes_model_and_report(random_3mm_folder, tmp_path):
    out = tmp_path / "compressed"
    result = run_cli(
        "compress",
        "--model-dir",
        str(random_3mm_folder),
        "--df",
        "0.3",
        "-o",
        str(out),
        "--json",
        check=True,
    )
    report = json.loads(result.stdout)
    assert report["output"] == str(out)
    assert report["params_after"] < 0.2 * report["params_before"]
    assert len(report["layers"]) == 22
    assert all(0 < layer["explained_variance"] <= 1 for layer in report["layers"])
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "weights.pt"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging left


def test_compress_never_replaces_an_existing_folder(random_3mm_folder, tmp_path):
    """Not the model folder itself, nor a folder of the user's."""
    before = {p: p.read_bytes() for p in random_3mm_folder.rglob("*") if p.is_file()}
    for out in (random_3mm_folder, tmp_path):
        (tmp_path / "notes.txt").write_text("mine")
        result = run_cli("compress", "--model-dir", str(random_3mm_folder), "-o", str(out))
        assert result.returncode == 1
        assert result.stderr.strip().endswith(
            "exists; choose another output (it is never replaced)"
        )
        assert (tmp_path / "notes.txt").read_text() == "mine"
    assert {p: p.read_bytes() for p in random_3mm_folder.rglob("*") if p.is_file()} == before


def test_compress_with_bad_df_leaves_nothing(random_3mm_folder, tmp_path):
    out = tmp_path / "compressed"
    result = run_cli("compress", "--model-dir", str(random_3mm_folder), "--df", "0", "-o", str(out))
    assert result.returncode != 0
    assert "DF must be in (0, 1]" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_compress_damaged_checkpoint_is_a_clear_error(random_3mm_folder, tmp_path):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(random_3mm_folder, broken)
    (broken / "fold_0" / "checkpoint_final.pth").write_bytes(b"not a checkpoint")
    result = run_cli("compress", "--model-dir", str(broken), "-o", str(tmp_path / "out"))
    assert result.returncode != 0
    assert "cannot read checkpoint" in result.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "args",
    [["segment", "--df", "abc"], ["benchmark", "--df", "0"], ["nonsense"], []],
    ids=["not-a-number", "df-0", "unknown-command", "no-command"],
)
def test_argument_errors_are_one_line_too(args):
    result = run_cli(*args)
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("tucker-segment") and "error:" in line and "--help)" in line
