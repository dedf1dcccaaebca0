"""Build hook: a wheel carries the shipped weights and their card as package data.

The repository's ``weights/`` folder stays the one copy in git; building a wheel copies
``weights/slsnet_isic2017.{pt,json}`` into ``slsnet/weights/`` of the wheel, where
``slsnet.checkpoint.shipped_weights`` finds them with ``importlib.resources``. An editable install
reads them from the checkout instead, so it copies nothing. Everything else is in
``pyproject.toml``.
"""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

WEIGHTS = Path("weights")
SHIPPED = ("slsnet_isic2017.pt", "slsnet_isic2017.json")  # the weights and their model card


class BuildPyWithWeights(build_py):
    """``build_py``, then the shipped weights into ``slsnet/weights/`` of the build."""

    def run(self) -> None:  # noqa: D102
        super().run()
        if self.editable_mode:
            return
        missing = [name for name in SHIPPED if not (WEIGHTS / name).is_file()]
        if missing:
            raise SystemExit(f"error: cannot build a wheel without {', '.join(missing)} in "
                             f"{WEIGHTS}/ (the shipped weights)")
        target = Path(self.build_lib) / "slsnet" / "weights"
        self.mkpath(str(target))
        for name in SHIPPED:
            self.copy_file(str(WEIGHTS / name), str(target / name))

    def get_outputs(self, include_bytecode: bool = True) -> list[str]:  # noqa: D102
        outputs = super().get_outputs(include_bytecode)
        if not self.editable_mode:
            target = Path(self.build_lib) / "slsnet" / "weights"
            outputs += [str(target / name) for name in SHIPPED]
        return outputs


setup(cmdclass={"build_py": BuildPyWithWeights})
