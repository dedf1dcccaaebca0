"""A private X server (Xvfb) for the tests of windows: installed with apt-get where missing."""

import os
import shutil
import subprocess

import pytest


def _install_xvfb() -> str | None:
    """Xvfb's path, installing it with apt-get when missing (as CI does); None if impossible."""
    if shutil.which("Xvfb"):
        return shutil.which("Xvfb")
    if shutil.which("apt-get") and os.geteuid() == 0:
        subprocess.run(["apt-get", "install", "-y", "-qq", "xvfb"], capture_output=True,
                       timeout=300, env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    return shutil.which("Xvfb")


@pytest.fixture(scope="module")
def xvfb():
    """A private X server; yields its DISPLAY string (":N")."""
    binary = _install_xvfb()
    if binary is None:
        pytest.skip("Xvfb is not installed and could not be installed with apt-get")
    read, write = os.pipe()
    server = subprocess.Popen([binary, "-displayfd", str(write), "-screen", "0", "1024x768x24",
                               "-nolisten", "tcp"], pass_fds=(write,),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.close(write)
    with os.fdopen(read) as f:  # Xvfb writes the display number it chose once it is ready
        number = f.readline().strip()
    if not number.isdigit():
        server.kill()
        pytest.skip("Xvfb started but did not report a display number")
    yield f":{number}"
    server.terminate()
    server.wait(10)
