"""Configuration of the SLSNet networks and of the input they expect."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

# Images go in as RGB scaled to [-1, 1] (pix2pix convention; the network is trained from scratch).
INPUT_MEAN = 0.5
INPUT_STD = 0.5


@dataclass(frozen=True)
class SLSNetConfig:
    """Hyper-parameters of the generator and discriminator (defaults follow the paper).

    The widths and depths reproduce the paper's budget: ~2.3 M generator parameters and
    ~0.9 G conv/deconv multiply-accumulates at 128×128 (see ``python -m slsnet.info``).
    """

    in_channels: int = 3  # RGB
    stem_channels: int = 16  # multiscale block output
    widths: tuple[int, int, int] = (32, 64, 128)  # after each downsampler
    mid_fams: int = 4  # FAMs at 1/4 resolution (dilation 1)
    deep_dilations: tuple[int, ...] = (2, 4, 8, 16, 2, 4, 8, 16)  # FAMs at 1/8 resolution
    decoder_fams: int = 2  # FAMs after each upsampling layer
    scales: tuple[float, ...] = (1.0, 0.5, 0.25, 0.125)  # multiscale block
    pam_reduction: int = 8  # query/key channels = C / pam_reduction (DANet)
    dropout_mid: float = 0.03  # ERFNet's encoder dropout at 64 channels
    dropout_deep: float = 0.3  # ERFNet's encoder dropout at 128 channels
    dropout_decoder: float = 0.1  # the GAN's noise z, as dropout in the decoder (pix2pix)
    disc_widths: tuple[int, int, int] = (64, 128, 256)
    input_size: int = 128  # the size the network is trained and run at (square)
    threshold: float = 0.5  # probability → binary mask
    grey_p: float = 0.0  # Shades of Grey colour constancy of the input (p ≥ 1); 0: none
    extra: dict = field(default_factory=dict)  # free-form notes kept with checkpoints

    def to_dict(self) -> dict:
        """Plain JSON-serialisable dict (tuples become lists)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> SLSNetConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error, not silently dropped."""
        known = set(cls.__dataclass_fields__)
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown SLSNetConfig fields: {sorted(unknown)}")
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        return cls(**values)
