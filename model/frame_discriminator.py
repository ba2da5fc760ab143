"""The frame discriminator of the `decoder` training stage: a small patch discriminator on single video frames.

It does not judge motion or content (the video discriminator of the adversarial stages does): only whether each
patch of about 22x22 pixels has the texture of a rendered frame, which is what a decoder trained on L1 alone
averages away. Four strided convolutions, GroupNorm, LeakyReLU, one logit per patch (a 16x9 grid at 128x72).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn


@dataclass
class FrameDiscriminatorConfig:
    channels: tuple[int, ...] = (32, 64, 128)  # per stride-2 convolution; the resolution halves at each
    groups: int = 8                            # GroupNorm groups (not on the first layer, as in PatchGAN)


class FrameDiscriminator(nn.Module):
    def __init__(self, config: FrameDiscriminatorConfig = FrameDiscriminatorConfig()):
        super().__init__()
        layers, width = [], 3
        for i, channels in enumerate(config.channels):
            layers.append(nn.Conv2d(width, channels, 4, stride=2, padding=1))
            if i:
                layers.append(nn.GroupNorm(config.groups, channels))
            layers.append(nn.LeakyReLU(0.2))
            width = channels
        layers.append(nn.Conv2d(width, 1, 3, padding=1))
        self.net = nn.Sequential(*layers)

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        """video (B, 3, T, H, W) in [-1, 1] -> logits (B, T, H / 2^n, W / 2^n), one per patch of each frame."""
        B, C, T, H, W = video.shape
        frames = video.transpose(1, 2).reshape(B * T, C, H, W)  # (B T, 3, H, W): frames are judged alone
        logits = self.net(frames)                                # (B T, 1, h, w)
        return logits.view(B, T, *logits.shape[-2:])
