"""The built wheel, installed outside the checkout, finds the shipped weights from any folder.

``python -m build`` makes the sdist and, from it, the wheel; the wheel goes into a fresh virtual
environment (no pip of its own, so it uses the test interpreter's pip and, through a ``.pth``
line, that interpreter's installed dependencies: torch is not downloaded again, and
``--no-index`` makes sure nothing is). From an empty folder, ``slsnet-stream`` and
``slsnet-evaluate`` of that environment must use the trained weights inside the installed
package and give the same results as this editable install.
"""

import csv
import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from support.isic_runs import ISIC, copy_split
from support.media import write_clip

from slsnet.checkpoint import SHIPPED_NAME, shipped_weights

ROOT = Path(__file__).resolve().parents[1]
TIMING = "ms_"  # CSV columns that are stage times, which differ run to run

pytestmark = pytest.mark.slow


def run(argv: list[str | Path], *, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": ""}
    result = subprocess.run([str(a) for a in argv], cwd=cwd, env=env, capture_output=True,
                            text=True, timeout=timeout)
    assert result.returncode == 0, f"{argv[0]} failed: {result.stderr[-2000:]}"
    return result


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A fresh virtual environment outside the checkout with the built wheel in it."""
    if shipped_weights() is None:
        pytest.skip(f"no {SHIPPED_NAME} in the checkout to build a wheel with")
    tmp = tmp_path_factory.mktemp("wheel")
    dist = tmp / "dist"
    run([sys.executable, "-m", "build", "--no-isolation", "--outdir", dist, ROOT], cwd=tmp)
    (wheel,) = dist.glob("*.whl")
    venv = tmp / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", venv], cwd=tmp)
    purelib = Path(run([venv / "bin" / "python", "-c",
                        "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                       cwd=tmp).stdout.strip())
    (purelib / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    run([venv / "bin" / "python", "-m", "pip", "install", "-q", "--no-index",
         f"{wheel}[web]"], cwd=tmp)
    return venv


def empty_dir(tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    path.mkdir()
    return path


def frame_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return [{k: v for k, v in row.items() if not k.startswith(TIMING)}
                for row in csv.DictReader(f)]


def test_the_wheel_carries_the_weights_and_finds_them_from_any_folder(installed, tmp_path):
    # when the installed package is asked for its weights from an empty folder
    out = run([installed / "bin" / "python", "-c",
               "from slsnet.checkpoint import shipped_weights; import slsnet; "
               "print(shipped_weights()); print(slsnet.__file__)"],
              cwd=empty_dir(tmp_path, "anywhere")).stdout.split()
    # then both the package and its weights are the installed ones, not the checkout's
    weights, package = map(Path, out)
    assert weights.is_relative_to(installed) and package.is_relative_to(installed)
    assert weights.name == SHIPPED_NAME
    assert weights.read_bytes() == shipped_weights().read_bytes()
    assert weights.with_suffix(".json").read_bytes() == shipped_weights().with_suffix(
        ".json").read_bytes()


def test_slsnet_stream_from_the_wheel_equals_the_editable_install(installed, tmp_path):
    # given a generated clip
    clip = write_clip(tmp_path / "clip.mp4", frames=12, size_wh=(192, 144)).path
    args = ["--video", clip, "--csv", "out.csv", "--no-display", "--threads", "1"]
    # when the wheel's command and this checkout's run it, each from an empty folder
    wheel_dir, editable_dir = empty_dir(tmp_path, "wheel"), empty_dir(tmp_path, "editable")
    wheel = run([installed / "bin" / "slsnet-stream", *args], cwd=wheel_dir)
    run([sys.executable, "-m", "stream", *args], cwd=editable_dir)
    # then the wheel ran trained weights, and every frame's mask measurements are the same
    assert "UNTRAINED" not in wheel.stderr + wheel.stdout
    rows = frame_rows(wheel_dir / "out.csv")
    assert len(rows) == 12
    assert rows == frame_rows(editable_dir / "out.csv")


@pytest.mark.skipif(not ISIC.is_dir(), reason=f"ISIC 2017 data not found at {ISIC}")
def test_slsnet_evaluate_from_the_wheel_equals_the_editable_install(installed, tmp_path):
    # given three validation images, and no --weights
    data = tmp_path / "val"
    copy_split(ISIC / "val", data, 3)
    # when the wheel's command and this checkout's score them, each from an empty folder
    wheel_dir, editable_dir = empty_dir(tmp_path, "wheel"), empty_dir(tmp_path, "editable")
    run([installed / "bin" / "slsnet-evaluate", "--data", data, "--json", "m.json",
         "--device", "cpu"], cwd=wheel_dir)
    run([sys.executable, "-m", "slsnet.evaluate", "--data", data, "--json", "m.json",
         "--device", "cpu"], cwd=editable_dir)
    # then the scores are the same: the wheel's weights are the checkout's trained ones
    ours = json.loads((wheel_dir / "m.json").read_text())
    assert ours == json.loads((editable_dir / "m.json").read_text())
    assert ours["n"] == 3


def test_a_build_without_the_weights_stops_with_one_line(tmp_path):
    # given a copy of the sources without the shipped weights
    src = tmp_path / "src"
    for name in ("slsnet", "stream"):
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md"):
        shutil.copy(ROOT / name, src / name)
    # when a wheel is built from it
    result = subprocess.run([sys.executable, "-m", "build", "--no-isolation", "--wheel",
                             "--outdir", tmp_path / "dist", src], capture_output=True, text=True,
                            timeout=300)
    # then it fails and says what is missing
    assert result.returncode != 0
    assert f"without {SHIPPED_NAME}" in result.stdout + result.stderr
