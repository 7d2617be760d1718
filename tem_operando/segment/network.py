"""The segmentation network: a compact U-Net (PyTorch; imported only where torch is needed).

Input: one normalised frame channel (see :mod:`tem_operando.segment.normalise`).
Output: 4 channels per pixel -- 3 class logits (0 background, 1 pristine, 2 reacted) and one
*boundary* logit that marks the seam between touching objects (used to split instances with a
watershed, :mod:`tem_operando.segment.instances`).

Architecture (shown for the defaults ``width=16, depth=4``; the shipped segnet-s v12 is ``width=24, depth=5,
blocks=3``)::

    stem    2×2 pixel unshuffle, 3×3 conv 4·c→w, depthwise-separable block   (half resolution)
    down    stride-2 3×3 conv, then a depthwise-separable block  per level, channels w·2^k (≤ 8w)
    up      bilinear ×2, concatenate the skip, 1×1 conv, depthwise-separable block
    head    1×1 conv to 4·4 channels, 2×2 pixel shuffle → 4 channels at full resolution
    refine  (``refine=r > 0`` only) at full resolution: 3×3 conv c→r of the input, concatenated
            with the head's 4 channels, a 3×3 conv (r+4)→r, a 3×3 conv r→r and a 1×1 conv to 4
            channels added to the head's output (zero-initialised: a refined model starts as its
            unrefined one)

The refinement sees the pixels the half-resolution trunk folds together. It was tried for a
swelling particle's light reacted shell, a few pixels wide, which segnet-s outlines only once it is
~4 px thick; fine-tuned on segnet-s v7's recipe it did not outline the shell earlier and did worse
on reaction fronts, so the shipped model has none (``models/experiments/README.md``, session 14).

Every convolution is followed by batch norm and ReLU (folded into the conv for inference by
:func:`fuse_for_inference`). Frames of any size are reflect-padded to a multiple of 2^depth.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

CLASS_NAMES = ("background", "pristine", "reacted")
N_OUT = 4  # 3 class logits + 1 boundary logit


def _cbr(cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class SepBlock(nn.Module):
    """Depthwise 3×3 then pointwise 1×1 (each with BN + ReLU), with a residual connection."""

    def __init__(self, c: int):
        super().__init__()
        self.dw = _cbr(c, c, 3, groups=c)
        self.pw = _cbr(c, c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.pw(self.dw(x))


class Down(nn.Module):
    def __init__(self, cin: int, cout: int, blocks: int):
        super().__init__()
        self.down = _cbr(cin, cout, 3, stride=2)
        self.blocks = nn.Sequential(*[SepBlock(cout) for _ in range(blocks)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.down(x))


class Up(nn.Module):
    def __init__(self, cin: int, cskip: int, cout: int):
        super().__init__()
        self.mix = _cbr(cin + cskip, cout, 1)
        self.block = SepBlock(cout)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        return self.block(self.mix(torch.cat([x, skip], 1)))


class SegNet(nn.Module):
    """Compact U-Net for TEM frames.

    Parameters
    ----------
    width : int
        Channels at full resolution; level k has ``min(width·2^k, 8·width)``.
    depth : int
        Number of stride-2 levels (the frame is padded to a multiple of 2^depth).
    blocks : int
        Depthwise-separable blocks per encoder level.
    in_channels : int
        Input channels (1: the normalised frame; 2: the frame and its reference).
    refine : int
        Channels of the full-resolution refinement (0: none, the trunk's output as it is).
    """

    def __init__(self, width: int = 16, depth: int = 4, blocks: int = 1, in_channels: int = 1, refine: int = 0):
        super().__init__()
        if isinstance(refine, bool) or int(refine) != refine or refine < 0:
            raise ValueError(f"refine must be a whole number of channels ≥ 0, got {refine!r}")
        self.config = dict(width=width, depth=depth, blocks=blocks, in_channels=in_channels)
        if refine:  # older model files have no such key: their config stays as it was
            self.config["refine"] = int(refine)
        chans = [min(width * 2 ** k, 8 * width) for k in range(depth + 1)]
        # full resolution is folded into channels (2×2 pixel unshuffle) and restored by a
        # pixel-shuffle head: nothing runs at full resolution, which is 4× cheaper
        self.stem = nn.Sequential(nn.PixelUnshuffle(2), _cbr(4 * in_channels, width, 3), SepBlock(width))
        self.downs = nn.ModuleList(Down(chans[k], chans[k + 1], blocks) for k in range(depth))
        self.ups = nn.ModuleList(Up(chans[k + 1], chans[k], chans[k]) for k in reversed(range(depth)))
        self.head = nn.Sequential(nn.Conv2d(width, 4 * N_OUT, 1), nn.PixelShuffle(2))
        self.multiple = 2 ** (depth + 1)
        self.fine = self.refine = None
        if refine:
            self.fine = _cbr(in_channels, refine, 3)
            last = nn.Conv2d(refine, N_OUT, 1)
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)
            self.refine = nn.Sequential(_cbr(refine + N_OUT, refine, 3), _cbr(refine, refine, 3), last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(n, 1, Y, X) normalised frames → (n, 4, Y, X) logits (any Y, X)."""
        y, xw = x.shape[-2:]
        m = self.multiple
        py, px = (-y) % m, (-xw) % m
        if py or px:
            mode = "reflect" if (py < y and px < xw) else "replicate"
            x = F.pad(x, (0, px, 0, py), mode=mode)
        skips = [self.stem(x)]
        for down in self.downs:
            skips.append(down(skips[-1]))
        h = skips.pop()
        for up in self.ups:
            h = up(h, skips.pop())
        out = self.head(h)
        if self.refine is not None:
            out = out + self.refine(torch.cat([out, self.fine(x)], 1))
        return out[..., :y, :xw]


def build(config: dict) -> SegNet:
    """A :class:`SegNet` from its ``config`` dict (as stored in model files)."""
    keys = {"width", "depth", "blocks", "in_channels", "refine"}
    return SegNet(**{k: int(v) for k, v in config.items() if k in keys})


def fuse_for_inference(model: nn.Module) -> nn.Module:
    """Fold every BatchNorm into the preceding convolution (eval mode, same outputs, faster)."""
    model.eval()
    for mod in model.modules():
        if isinstance(mod, nn.Sequential) and len(mod) >= 2 and isinstance(mod[0], nn.Conv2d) \
                and isinstance(mod[1], nn.BatchNorm2d):
            mod[0] = torch.nn.utils.fusion.fuse_conv_bn_eval(mod[0], mod[1])
            mod[1] = nn.Identity()
    return model


def n_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
