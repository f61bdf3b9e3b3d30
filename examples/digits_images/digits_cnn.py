"""The example's model: a small CNN for 8x8 digit images, named by the run config as
`[model] factory = "digits_cnn:cnn"` (fedsilo imports this module from the config's folder)."""

from __future__ import annotations

from torch import nn


def cnn(num_features: int, num_outputs: int, channels: int = 16,
        batchnorm: bool = False) -> nn.Module:
    """Two 3x3 convolutions (optionally each followed by BatchNorm), 2x2 max-pooling and a
    linear classifier. `num_features` is the images' channel count (1: grayscale)."""
    def block(c_in: int, c_out: int) -> list[nn.Module]:
        norm: list[nn.Module] = [nn.BatchNorm2d(c_out)] if batchnorm else []
        return [nn.Conv2d(c_in, c_out, 3, padding=1), *norm, nn.ReLU()]

    return nn.Sequential(*block(num_features, channels), *block(channels, 2 * channels),
                         nn.MaxPool2d(2), nn.Flatten(), nn.Linear(2 * channels * 16, num_outputs))
