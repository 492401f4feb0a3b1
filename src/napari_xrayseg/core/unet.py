"""The ``unet`` / ``unet3d`` network, in plain torch: MONAI's ``UNet``, reimplemented.

Hand-written because importing MONAI's package costs about 2.4 s in every fresh process
(its ``__init__`` loads ``monai.apps``, ``monai.data`` and ``monai.transforms``, with
scipy and pandas) only to build one network, 16 % of a 15 s ``xrayseg predict`` of a
500^3 volume. This module builds the same network as MONAI 1.6's
``monai.networks.nets.UNet`` for the options napari-xrayseg uses (2D or 3D, 3x3 kernels,
PReLU, batch or instance norm, dropout, bias, "NDA" ordering, 0..4 residual units):
the same module tree (``Sequential`` nesting, module types, names), hence the same
``state_dict`` keys, shapes and order, and the same order of parameter creation, so the
same seed gives bit-identical initial weights. Saved models and training runs are
unchanged; ``tests/core/test_unet.py`` checks all of it against MONAI's class.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

__all__ = ["UNet"]

_KERNEL = 3  # MONAI's default kernel_size and up_kernel_size; "same" padding is 1
_CONV = {2: nn.Conv2d, 3: nn.Conv3d}
_CONV_T = {2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}
_NORM = {
    ("batch", 2): nn.BatchNorm2d,
    ("batch", 3): nn.BatchNorm3d,
    ("instance", 2): nn.InstanceNorm2d,
    ("instance", 3): nn.InstanceNorm3d,
}


class ADN(nn.Sequential):
    """Norm, dropout, activation (MONAI's ``ADN`` with ordering "NDA"): children ``N``, ``D``, ``A``.

    MONAI adds the dropout module whenever a dropout value is given, 0.0 included.
    """

    def __init__(self, channels: int, dims: int, norm: str, dropout: float) -> None:
        super().__init__()
        n = _NORM[norm, dims](channels)  # MONAI's factories pass num_features only: torch's defaults
        a = nn.PReLU()
        d = nn.Dropout(p=float(dropout))  # dropout_dim 1: plain Dropout in 2D and 3D
        self.add_module("N", n)
        self.add_module("D", d)
        self.add_module("A", a)


class Convolution(nn.Sequential):
    """A convolution (``conv``), then an :class:`ADN` (``adn``) unless ``conv_only`` (MONAI's ``Convolution``)."""

    def __init__(
        self,
        dims: int,
        in_channels: int,
        out_channels: int,
        *,
        strides: int,
        norm: str,
        dropout: float,
        conv_only: bool = False,
        transposed: bool = False,
    ) -> None:
        super().__init__()
        if transposed:
            conv = _CONV_T[dims](
                in_channels, out_channels, _KERNEL, stride=strides, padding=1, output_padding=strides - 1
            )
        else:
            conv = _CONV[dims](in_channels, out_channels, _KERNEL, stride=strides, padding=1)
        self.add_module("conv", conv)
        if not conv_only:
            self.add_module("adn", ADN(out_channels, dims, norm, dropout))


class ResidualUnit(nn.Module):
    """``subunits`` convolutions plus a residual path (MONAI's ``ResidualUnit``): ``conv`` and ``residual``.

    ``adn`` (``norm``, ``dropout``) goes to every :class:`Convolution`.
    """

    def __init__(
        self,
        dims: int,
        in_channels: int,
        out_channels: int,
        *,
        strides: int,
        subunits: int,
        last_conv_only: bool = False,
        **adn: Any,
    ) -> None:
        super().__init__()
        self.conv = nn.Sequential()
        self.residual: nn.Module = nn.Identity()
        channels, stride = in_channels, strides
        n = max(1, subunits)
        for su in range(n):
            unit = Convolution(
                dims,
                channels,
                out_channels,
                strides=stride,
                conv_only=last_conv_only and su == n - 1,
                **adn,
            )
            self.conv.add_module(f"unit{su:d}", unit)
            channels, stride = out_channels, 1
        if strides != 1 or in_channels != out_channels:
            # a strided 3x3 convolution, or a 1x1 one when only the channels change
            k, pad = (_KERNEL, 1) if strides != 1 else (1, 0)
            self.residual = _CONV[dims](in_channels, out_channels, k, strides, pad)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        res: torch.Tensor = self.residual(x)
        cx: torch.Tensor = self.conv(x)
        return cx + res


class SkipConnection(nn.Module):
    """``cat([x, submodule(x)])`` along the channels (MONAI's ``SkipConnection``, mode "cat")."""

    def __init__(self, submodule: nn.Module, dim: int = 1) -> None:
        super().__init__()
        self.submodule = submodule
        self.dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.submodule(x)
        return torch.cat([x, y], dim=self.dim)


class UNet(nn.Module):
    """MONAI's ``UNet`` with kernel 3, PReLU, "NDA" ordering and bias (its defaults), in plain torch.

    Parameters
    ----------
    spatial_dims : int
        2 or 3.
    in_channels, out_channels : int
        Input and output channels.
    channels : sequence of int
        Feature channels per level, top first (at least 2).
    strides : sequence of int
        Stride of each level's down convolution, ``len(channels) - 1`` of them.
    num_res_units : int
        Convolutions per residual unit; 0: plain convolutions, no residual units.
    norm : str
        ``"batch"`` or ``"instance"`` (MONAI's name; torch's default arguments).
    dropout : float
        Dropout probability after each normalisation (a ``Dropout`` module even for 0).

    Examples
    --------
    >>> net = UNet(2, 1, 3, channels=(4, 8, 16), strides=(2, 2))
    >>> net(torch.zeros(1, 1, 16, 16)).shape
    torch.Size([1, 3, 16, 16])
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        channels: Sequence[int],
        strides: Sequence[int],
        num_res_units: int = 0,
        norm: str = "instance",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims {spatial_dims!r} is not 2 or 3")
        if (norm, spatial_dims) not in _NORM:
            raise ValueError(f"norm {norm!r} is not 'batch' or 'instance'")
        if len(channels) < 2:
            raise ValueError("the length of `channels` should be no less than 2.")
        if len(strides) != len(channels) - 1:
            raise ValueError("the length of `strides` should equal to `len(channels) - 1`.")
        self.dimensions = spatial_dims
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.channels = tuple(channels)
        self.strides = tuple(strides)
        self.num_res_units = num_res_units
        self.norm = norm
        self.dropout = dropout
        self.model = self._block(in_channels, out_channels, self.channels, self.strides, True)

    def _block(self, inc: int, outc: int, channels: Sequence[int], strides: Sequence[int], top: bool) -> nn.Module:
        # bottom-up, as MONAI builds it: the inner levels' parameters are created first
        c, s = channels[0], strides[0]
        if len(channels) > 2:
            sub = self._block(c, c, channels[1:], strides[1:], False)
            upc = c * 2
        else:
            sub = self._down(c, channels[1], 1)
            upc = c + channels[1]
        down = self._down(inc, c, s)
        up = self._up(upc, outc, s, top)
        return nn.Sequential(down, SkipConnection(sub), up)

    def _down(self, inc: int, outc: int, strides: int) -> nn.Module:
        kw = {"strides": strides, "norm": self.norm, "dropout": self.dropout}
        if self.num_res_units > 0:
            return ResidualUnit(self.dimensions, inc, outc, subunits=self.num_res_units, **kw)
        return Convolution(self.dimensions, inc, outc, **kw)

    def _up(self, inc: int, outc: int, strides: int, top: bool) -> nn.Module:
        conv = Convolution(
            self.dimensions,
            inc,
            outc,
            strides=strides,
            norm=self.norm,
            dropout=self.dropout,
            conv_only=top and self.num_res_units == 0,
            transposed=True,
        )
        if self.num_res_units == 0:
            return conv
        ru = ResidualUnit(
            self.dimensions,
            outc,
            outc,
            strides=1,
            subunits=1,
            norm=self.norm,
            dropout=self.dropout,
            last_conv_only=top,
        )
        return nn.Sequential(conv, ru)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Scores (N, out_channels, *spatial) of ``x`` (N, in_channels, *spatial)."""
        if not torch.jit.is_scripting():
            if self.training and x.device.type == "cpu" and torch.is_autocast_enabled("cpu"):
                return self._forward_fp32_top(x)
        return self.model(x)

    @torch.jit.unused
    def _forward_fp32_top(self, x: torch.Tensor) -> torch.Tensor:
        """Training under CPU bf16 autocast: the top up block (to the classes) in fp32.

        oneDNN's bf16 weight gradient of a convolution with few channels was not finite in
        about 1 step in 8 (torch 2.13, AMX): the last transposed convolution, to the classes
        (which ruined the weights within an epoch), and the classes-to-classes convolution of
        the residual unit after it (3 steps in 16 of a medium ``unet3d``, skipped by training).
        The block is a few % of the network's FLOPs (docs/train.md).
        """
        down, skip, up = self.model
        h = skip(down(x))
        with torch.autocast("cpu", enabled=False):
            out: torch.Tensor = up(h.float())
        return out
