"""Backbones from MONAI's networks, and a small affine head.

Every backbone maps the concatenated pair ``cat([moving, fixed], 1)`` of shape
``(B, 2 * C, *spatial)`` to a field ``(B, ndim, *spatial)`` in voxels (regnet's DDF
convention: channel ``i`` along spatial axis ``i``). The output layer starts near zero, so an
untrained network predicts (almost) the identity transform. ``theta_to_ddf`` (an affine
``theta`` as a voxel DDF) is :func:`regnet.geometry.theta_to_ddf`, re-exported here.
"""

from __future__ import annotations

import torch
from torch import nn

from regnet import _checks
from regnet._checks import ConfigError
from regnet.geometry import theta_to_ddf

__all__ = ["BACKBONES", "DEFAULT_CHANNELS", "AffineHead", "FlowBackbone", "theta_to_ddf"]

BACKBONES = ("voxelmorph", "unet", "basicunet", "regunet", "localnet")

#: Channels per level when ``channels`` is not given.
DEFAULT_CHANNELS = {
    "voxelmorph": [16, 32, 32, 32, 32, 32, 32, 32],  # (down, up) pairs: 4 levels, as VoxelMorph's
    "unet": [16, 32, 32, 32],
    "basicunet": [16, 16, 32, 32, 64, 16],
    "regunet": [16, 32, 64],  # num_channel_initial * 2**level; depth = len - 1
    "localnet": [16, 32, 64, 128],  # extract_levels 0..len-1
}


def _conv(ndim: int):
    return nn.Conv3d if ndim == 3 else nn.Conv2d


def _small_init(layer: nn.Module, std: float = 1e-5) -> None:
    nn.init.normal_(layer.weight, 0.0, std)
    if layer.bias is not None:
        nn.init.zeros_(layer.bias)


class FlowBackbone(nn.Module):
    """A MONAI network followed (where needed) by a 3x3(x3) convolution to ``ndim`` channels.

    Args:
        name: one of :data:`BACKBONES`.
        ndim: 2 or 3 spatial dimensions.
        in_channels: channels of the network input (``2 * image_channels``).
        channels: features per level (see :data:`DEFAULT_CHANNELS`; for ``voxelmorph`` an even
            number of entries, VoxelMorph's (encoder, decoder) pairs; for ``basicunet`` six).

    ``divisor`` is the number every spatial size must be divisible by.
    """

    def __init__(self, name: str, ndim: int, in_channels: int, channels=None) -> None:
        super().__init__()
        from monai.networks import nets

        owner = "RegistrationModule"
        _checks.string_choice(owner, "backbone", name, BACKBONES, error=ConfigError)
        if channels is None:
            channels = DEFAULT_CHANNELS[name]
        else:
            channels = _checks.int_sequence(owner, "channels", channels, error=ConfigError)
        self.name, self.ndim = name, ndim
        head_in = None
        if name == "voxelmorph":
            if len(channels) < 2 or len(channels) % 2:
                raise ConfigError(f"{owner}: channels for backbone 'voxelmorph' must be an even number (>= 2) of "
                                  f"entries, VoxelMorph's (encoder, decoder) pairs, got {channels!r}")
            self.net = nets.VoxelMorphUNet(ndim, in_channels, unet_out_channels=channels[-1], channels=channels,
                                           final_conv_channels=(channels[0], channels[0]))
            # its last convolution outputs the ndim-channel field (VoxelMorph's flow layer): start it near 0
            _small_init([m for m in self.net.modules() if isinstance(m, _conv(ndim))][-1])
            self.divisor = 2 ** (len(channels) // 2)
        elif name == "unet":
            if len(channels) < 2:
                raise ConfigError(f"{owner}: channels for backbone 'unet' needs >= 2 levels, got {channels!r}")
            self.net = nets.UNet(ndim, in_channels, channels[0], channels=channels,
                                 strides=[2] * (len(channels) - 1), num_res_units=1, norm="instance")
            head_in, self.divisor = channels[0], 2 ** (len(channels) - 1)
        elif name == "basicunet":
            if len(channels) != 6:
                raise ConfigError(f"{owner}: channels for backbone 'basicunet' must have 6 entries (BasicUNet's "
                                  f"features), got {channels!r}")
            self.net = nets.BasicUNet(ndim, in_channels, channels[-1], features=channels)
            head_in, self.divisor = channels[-1], 16
        elif name == "regunet":
            if len(channels) < 2:
                raise ConfigError(f"{owner}: channels for backbone 'regunet' needs >= 2 levels, got {channels!r}")
            self.net = nets.RegUNet(ndim, in_channels, num_channel_initial=channels[0], depth=len(channels) - 1,
                                    out_channels=ndim, out_kernel_initializer="zeros")
            self.divisor = 2 ** (len(channels) - 1)
        else:  # localnet
            self.net = nets.LocalNet(ndim, in_channels, num_channel_initial=channels[0],
                                     extract_levels=tuple(range(len(channels))), out_channels=ndim,
                                     out_kernel_initializer="zeros")
            self.divisor = 2 ** (len(channels) - 1)
        self.head = None
        if head_in is not None:
            self.head = _conv(ndim)(head_in, ndim, kernel_size=3, padding=1)
            _small_init(self.head)

    def forward(self, pair: torch.Tensor) -> torch.Tensor:
        """``(B, 2C, *spatial)`` -> field ``(B, ndim, *spatial)`` in voxels."""
        out = self.net(pair)
        return self.head(out) if self.head is not None else out


class AffineHead(nn.Module):
    """A small strided CNN predicting an affine map ``theta`` ``(B, ndim, ndim + 1)`` in
    normalised coordinates (``torch.nn.functional.affine_grid`` with ``align_corners=True``:
    fixed-grid points to moving-image points), starting at the identity.

    Global average pooling makes it independent of the image size.
    """

    def __init__(self, ndim: int, in_channels: int, features: int = 16, levels: int = 4) -> None:
        super().__init__()
        conv = _conv(ndim)
        layers, c = [], in_channels
        for level in range(levels):
            out = features * 2 ** min(level, 3)
            layers += [conv(c, out, kernel_size=3, stride=2, padding=1), nn.LeakyReLU(0.2, inplace=True)]
            c = out
        self.encoder = nn.Sequential(*layers)
        self.fc = nn.Linear(c, ndim * (ndim + 1))
        nn.init.zeros_(self.fc.weight)
        identity = torch.eye(ndim, ndim + 1)
        with torch.no_grad():
            self.fc.bias.copy_(identity.flatten())
        self.ndim = ndim

    def forward(self, pair: torch.Tensor) -> torch.Tensor:
        features = self.encoder(pair).flatten(2).mean(-1)
        return self.fc(features).view(-1, self.ndim, self.ndim + 1)

