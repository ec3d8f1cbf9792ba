"""Save/load round trip of a compressed model and clear errors for damaged or mismatched files."""

import json
import shutil

import pytest
import torch
from TuckerSegmentLib.engine.compress import CompressionSettings
from TuckerSegmentLib.errors import TuckerSegmentError
from TuckerSegmentLib.storage.compressed_format import load_compressed, read_manifest
from TuckerSegmentLib.storage.decompose import compress_model_folder, write_compressed_model
from TuckerSegmentLib.ts.model_folder import file_sha256


@pytest.fixture(scope="module")
def compressed(random_3mm_folder, tmp_path_factory):
    result = compress_model_folder(random_3mm_folder, CompressionSettings(df=0.3))
    out = write_compressed_model(result, tmp_path_factory.mktemp("compressed") / "df0.3")
    return result, out


def _damaged_copy(out, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    return copy


def test_round_trip_gives_identical_outputs(compressed):
    result, out = compressed
    loaded, manifest = load_compressed(out)
    x = torch.randn(1, 1, 32, 48, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x), result.network(x))
    assert manifest.settings == CompressionSettings(df=0.3)
    assert [layer.rank_in for layer in manifest.layers] == [
        layer.rank_in for layer in result.manifest.layers
    ]


def test_manifest_records_what_the_issue_asks_for(compressed, random_3mm_folder):
    _, out = compressed
    data = json.loads((out / "manifest.json").read_text())
    assert data["settings"] == {"df": 0.3, "rank_floor": 8, "method": "hosvd", "policy": "default"}
    assert data["source_checkpoint_sha256"] == file_sha256(
        random_3mm_folder / "fold_0" / "checkpoint_final.pth"
    )
    assert {"torch", "tensorly", "nnunetv2", "tuckersegment"} <= set(data["versions"])
    assert len(data["layers"]) == 22
    layer = data["layers"][0]
    assert {"name", "rank_in", "rank_out", "explained_variance"} <= set(layer)
    assert data["params"]["compressed"] < 0.5 * data["params"]["original"]


def test_loading_does_not_decompose(compressed, monkeypatch):
    _, out = compressed
    import TuckerSegmentLib.engine.compress as compress_module
    import TuckerSegmentLib.engine.factorize as factorize_module

    def refuse(*args, **kwargs):
        raise AssertionError("load must not decompose")

    # compress.py binds factorize by name: replace it there too, where a decomposition calls it
    monkeypatch.setattr(factorize_module, "factorize", refuse)
    monkeypatch.setattr(compress_module, "factorize", refuse)
    load_compressed(out)


def test_truncated_manifest_is_a_clear_error(compressed, tmp_path):
    copy = _damaged_copy(compressed[1], tmp_path)
    text = (copy / "manifest.json").read_text()
    (copy / "manifest.json").write_text(text[: len(text) // 2])
    with pytest.raises(TuckerSegmentError, match="manifest.json is corrupt"):
        load_compressed(copy)


def test_manifest_missing_keys_is_a_clear_error(compressed, tmp_path):
    copy = _damaged_copy(compressed[1], tmp_path)
    data = json.loads((copy / "manifest.json").read_text())
    del data["layers"]
    (copy / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(TuckerSegmentError, match="incomplete or malformed"):
        load_compressed(copy)


def test_foreign_json_is_not_a_manifest(compressed, tmp_path):
    copy = _damaged_copy(compressed[1], tmp_path)
    (copy / "manifest.json").write_text(json.dumps({"hello": "world"}))
    with pytest.raises(TuckerSegmentError, match="not a TuckerSegment manifest"):
        read_manifest(copy)


def test_damaged_weights_are_detected(compressed, tmp_path):
    copy = _damaged_copy(compressed[1], tmp_path)
    weights = copy / "weights.pt"
    raw = bytearray(weights.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    weights.write_bytes(bytes(raw))
    with pytest.raises(TuckerSegmentError, match="does not match its manifest"):
        load_compressed(copy)


def test_manifest_for_another_architecture_is_refused(compressed, tmp_path):
    copy = _damaged_copy(compressed[1], tmp_path)
    data = json.loads((copy / "manifest.json").read_text())
    data["layers"][3]["in_channels"] = 99
    (copy / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(TuckerSegmentError, match="channels"):
        load_compressed(copy)


def test_missing_folder_or_weights(compressed, tmp_path):
    with pytest.raises(TuckerSegmentError, match="no manifest.json"):
        load_compressed(tmp_path / "nothing")
    copy = _damaged_copy(compressed[1], tmp_path)
    (copy / "weights.pt").unlink()
    with pytest.raises(TuckerSegmentError, match="missing weights.pt"):
        load_compressed(copy)
