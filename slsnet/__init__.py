"""SLSNet: lightweight GAN skin lesion segmentation (Sarker et al., ESWA 2021)."""

from importlib.metadata import PackageNotFoundError, version

from slsnet.checkpoint import load_generator
from slsnet.config import INPUT_MEAN, INPUT_STD, SLSNetConfig
from slsnet.discriminator import Discriminator, build_discriminator
from slsnet.generator import Generator, build_generator

try:
    __version__ = version("slsnet-live")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0"

__all__ = [
    "INPUT_MEAN",
    "INPUT_STD",
    "Discriminator",
    "Generator",
    "SLSNetConfig",
    "build_discriminator",
    "build_generator",
    "load_generator",
]
