"""The README's Python API block runs as written, on the test models."""

from __future__ import annotations

import re
import shutil

from conftest import MODELS, REPO


def test_readme_python_api_block_runs(phantom_files, tmp_path, monkeypatch, isolated_home):
    text = (REPO / "README.md").read_text()
    section = text[text.index("## Python API") :]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    ct, _ = phantom_files
    shutil.copy(ct, tmp_path / "ct.nii.gz")
    for key, value in isolated_home.items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(tmp_path)
    fast_folder = next(MODELS.glob("Dataset297*/*__3d_fullres"))
    namespace = {"WEIGHTS": MODELS, "MODEL_FOLDER": fast_folder}
    exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102 - the README's own code
    assert (tmp_path / "ct.seg.nrrd").is_file()
    assert 0.0 < namespace["sidecar"]["comparison"]["summary"]["mean_dice"] <= 1.0
    assert namespace["manifest"].settings.df == 0.3
    assert sum(p.numel() for p in namespace["network"].parameters()) > 0
