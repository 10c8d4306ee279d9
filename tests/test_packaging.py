"""What users install: the source distribution's contents, the version, the torch/NumPy pairing."""

from __future__ import annotations

import importlib.metadata
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

import cnnwidgets
from cnnwidgets.core._compat import check_numpy_bridge

REPO = Path(__file__).resolve().parents[1]
# what the source distribution must hold for its tests and lessons to run as in the repository
SHIPPED = ("cnnwidgets/", "tests/", "notebooks/", "benchmarks/", "binder/", ".ci/")


def _tracked_files() -> list[str]:
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("not a git checkout (an unpacked source distribution has no list of tracked files)")
    out = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    return [name for name in out.splitlines() if (REPO / name).is_file()]


@pytest.mark.slow
def test_source_distribution_holds_every_tracked_file_of_the_package_tests_and_lessons(tmp_path):
    tracked = _tracked_files()
    tree = tmp_path / "tree"
    for name in tracked:  # a copy, so the build writes nothing into the checkout
        (tree / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, tree / name)
    build = ("import sys; from setuptools import build_meta; "
             "print(build_meta.build_sdist(sys.argv[1]))")
    done = subprocess.run([sys.executable, "-c", build, str(tmp_path / "dist")], cwd=tree,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    archive = tmp_path / "dist" / done.stdout.strip().splitlines()[-1]
    with tarfile.open(archive) as tar:
        names = {name.split("/", 1)[1] for name in tar.getnames() if "/" in name}
    wanted = {name for name in tracked if name.startswith(SHIPPED)}
    assert wanted and not wanted - names, sorted(wanted - names)[:20]
    assert not [name for name in names if "__pycache__" in name or name.endswith(".pyc")]


def test_installed_version_is_the_package_version():
    assert importlib.metadata.version("cnnwidgets") == cnnwidgets.__version__


def test_a_torch_built_for_numpy_1_is_refused_at_import_with_what_to_install(monkeypatch):
    def no_numpy(array):
        raise RuntimeError("Numpy is not available")

    monkeypatch.setattr(torch, "from_numpy", no_numpy)
    with pytest.raises(ImportError, match=r"numpy<2.*torch>=2\.3") as info:
        check_numpy_bridge()
    assert torch.__version__ in str(info.value) and np.__version__ in str(info.value)


def test_the_installed_torch_and_numpy_work_together():
    check_numpy_bridge()  # raises when they do not
    assert torch.from_numpy(np.arange(3.0)).numpy().tolist() == [0.0, 1.0, 2.0]
