"""The Binder build steps, run locally with the download pointed at local files."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from packaging.version import Version

from cnnwidgets.zoo.fetch import fetch_weights, resolve_url

REPO = Path(__file__).resolve().parents[1]


def _fake_weights(folder: Path, stem: str) -> tuple[Path, str]:
    payload = folder / "payload.pth"
    torch.save({"w": torch.arange(6.0)}, payload)
    digest = hashlib.sha256(payload.read_bytes()).hexdigest()
    named = folder / f"{stem}-{digest[:8]}.pth"
    payload.rename(named)
    return named, digest


def test_resolve_url_knows_torchvision_names():
    assert resolve_url("ResNet18_Weights.IMAGENET1K_V1").endswith("/resnet18-f37072fd.pth")
    with pytest.raises(ValueError, match="unknown weights"):
        resolve_url("NoSuchNet_Weights.X")


def test_fetch_verifies_and_caches(tmp_path, monkeypatch):
    source = tmp_path / "mirror"
    source.mkdir()
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    good, _ = _fake_weights(source, "tiny")
    [path] = fetch_weights([good.as_uri()], progress=False)
    assert path.read_bytes() == good.read_bytes()
    assert path.parent == tmp_path / "torch" / "hub" / "checkpoints"
    assert torch.load(path, weights_only=True)["w"].tolist() == [0, 1, 2, 3, 4, 5]
    # A file whose content does not match the hash in its name is refused and not kept.
    bad = source / "tiny-00000000.pth"
    bad.write_bytes(b"not the real weights")
    with pytest.raises(RuntimeError, match="could not fetch tiny-00000000.pth"):
        fetch_weights([bad.as_uri()], progress=False)
    assert not (path.parent / "tiny-00000000.pth").exists()


def _run_post_build(tmp_path: Path, weights: str | None, mirror: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.pop("CNNWIDGETS_BINDER_WEIGHTS", None)
    env.update(
        TORCH_HOME=str(tmp_path / "torch"),
        CNNWIDGETS_BINDER_SKIP_PIP="1",
        CNNWIDGETS_WEIGHTS_MIRROR=mirror.as_uri(),
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        PYTHONPATH=str(REPO),
    )
    if weights is not None:
        env["CNNWIDGETS_BINDER_WEIGHTS"] = weights
    return subprocess.run(["bash", str(REPO / "binder" / "postBuild")], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)


def test_post_build_downloads_through_the_mirror(tmp_path):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    good, _ = _fake_weights(mirror, "resnet18")
    # The URL's folder is replaced by the mirror, as it would be for the real weights.
    done = _run_post_build(tmp_path, f"https://download.pytorch.org/models/{good.name}", mirror)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "torch" / "hub" / "checkpoints" / good.name).read_bytes() == good.read_bytes()


def test_post_build_fails_loudly_on_a_corrupt_download(tmp_path):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "resnet18-f37072fd.pth").write_bytes(b"truncated")
    done = _run_post_build(tmp_path, "ResNet18_Weights.IMAGENET1K_V1", mirror)
    assert done.returncode != 0
    assert "resnet18-f37072fd.pth" in done.stderr


def test_post_build_fetches_the_weights_the_notebooks_load(tmp_path):
    # The notebooks call load_torchvision("resnet18"), i.e. ResNet18_Weights.DEFAULT; postBuild must
    # fetch that name, not a member DEFAULT may stop pointing to. (The real file cannot be made here,
    # so the mirror holds a corrupt one, and the error names what postBuild asked for.)
    from cnnwidgets.zoo.pretrained import cached_weights_path, resolve_weights

    expected = cached_weights_path(resolve_weights("resnet18", "DEFAULT")).name
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / expected).write_bytes(b"not the real weights")
    done = _run_post_build(tmp_path, None, mirror)
    assert done.returncode != 0
    assert "python -m cnnwidgets.zoo.fetch ResNet18_Weights.DEFAULT" in done.stderr
    assert f"could not fetch {expected} from {(mirror / expected).as_uri()}" in done.stderr


def _requirement_bounds(lines: list[str]) -> dict[str, Version]:
    bounds = {}
    for line in lines:
        line = line.split("#", 1)[0].strip().strip('"')
        if line and not line.startswith("-"):
            name, _, bound = line.partition(">=")
            bounds[name.strip().lower()] = Version(bound.strip())  # 8 == 8.0
    return bounds


def test_binder_installs_every_dependency_with_the_same_lower_bound():
    # postBuild installs cnnwidgets with --no-deps, so each dependency in pyproject.toml must come
    # from requirements.txt or postBuild's CPU-only torch line (pip check in postBuild fails the
    # build otherwise; this catches it before a Binder build does).
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    wanted = _requirement_bounds(project["dependencies"])
    binder = _requirement_bounds((REPO / "binder" / "requirements.txt").read_text(encoding="utf-8").splitlines())
    post_build = (REPO / "binder" / "postBuild").read_text(encoding="utf-8")
    torch_line = next(line for line in post_build.splitlines() if '"torch>=' in line)
    cpu = _requirement_bounds(torch_line.split())
    assert "--index-url https://download.pytorch.org/whl/cpu" in post_build
    assert "torch" not in binder and "torchvision" not in binder  # never from PyPI, whose torch is the CUDA build
    assert {**binder, **cpu}.items() >= wanted.items()
