"""The model structures ferry.fedavg and ferry.centralized train, built from a frozen spec.

Every model takes flat rows (batch, n_features), the shape the data layer
yields; the CNN reshapes to its image shape inside, so tabular and image data
share one training loop. Models hold no buffers, no dropout and no batch norm:
their state is exactly their parameters, and a forward pass uses no RNG, which
keeps training a pure function of (weights, data order).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn

from .weights import Weights, WeightsMismatch

MODEL_KINDS = ("logreg", "mlp", "cnn")


@dataclass(frozen=True)
class ModelSpec:
    kind: str
    n_features: int
    n_classes: int
    hidden: tuple[int, ...] = (64,)                     # mlp: 1 or 2 layers; cnn: dense layer
    image_shape: tuple[int, int, int] | None = None    # (channels, height, width), cnn only

    def __post_init__(self) -> None:
        # Normalise the flow parameter `hidden` (one int) to a tuple.
        if isinstance(self.hidden, int):
            object.__setattr__(self, "hidden", (self.hidden,))
        object.__setattr__(self, "hidden", tuple(int(h) for h in self.hidden))
        if self.kind not in MODEL_KINDS:
            raise ValueError(f"model kind must be one of {MODEL_KINDS}, got {self.kind!r}")
        if self.n_features < 1 or self.n_classes < 2:
            raise ValueError(f"need n_features >= 1 and n_classes >= 2, got {self.n_features}, "
                             f"{self.n_classes}")
        if any(h < 1 for h in self.hidden) or (self.kind == "mlp" and len(self.hidden) not in (1, 2)):
            raise ValueError(f"hidden must be 1 or 2 positive sizes for an mlp, got {self.hidden}")
        if self.kind == "cnn":
            shape = self.image_shape or _square_image(self.n_features)
            shape = tuple(int(s) for s in shape)
            if len(shape) != 3 or math.prod(shape) != self.n_features or min(shape[1:]) < 4:
                raise ValueError(f"cnn image_shape {shape} must be (C, H, W) with H, W >= 4 and "
                                 f"C*H*W == n_features ({self.n_features})")
            object.__setattr__(self, "image_shape", shape)

    @classmethod
    def from_params(cls, params: Mapping[str, Any], n_features: int, n_classes: int,
                    image_shape: tuple[int, int, int] | None = None) -> "ModelSpec":
        return cls(params.get("model", "logreg"), n_features, n_classes,
                   int(params.get("hidden", 64)), image_shape)


def _square_image(n_features: int) -> tuple[int, int, int]:
    # 8x8 digits or 28x28 MNIST arrive as flat rows: a square count means one channel.
    side = math.isqrt(n_features)
    if side * side != n_features:
        raise ValueError(f"cnn needs image_shape: {n_features} features are not a square image")
    return (1, side, side)


class SmallCNN(nn.Module):
    """conv3x3(8) - relu - pool2 - conv3x3(16) - relu - pool2 - dense(hidden) - relu - dense."""

    def __init__(self, image_shape: tuple[int, int, int], hidden: int, n_classes: int):
        super().__init__()
        c, h, w = image_shape
        self.image_shape = image_shape
        self.conv1 = nn.Conv2d(c, 8, kernel_size=3, padding=1)
        self.conv2 = nn.Conv2d(8, 16, kernel_size=3, padding=1)
        self.fc1 = nn.Linear(16 * (h // 2 // 2) * (w // 2 // 2), hidden)
        self.fc2 = nn.Linear(hidden, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.reshape(x.shape[0], *self.image_shape)
        x = torch.max_pool2d(torch.relu(self.conv1(x)), 2)
        x = torch.max_pool2d(torch.relu(self.conv2(x)), 2)
        return self.fc2(torch.relu(self.fc1(x.flatten(1))))


def _mlp(n_features: int, hidden: tuple[int, ...], n_classes: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    width = n_features
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU()]
        width = h
    return nn.Sequential(*layers, nn.Linear(width, n_classes))


def build_model(spec: ModelSpec, seed: int) -> nn.Module:
    """The model with a deterministic initialisation; the global torch RNG is left untouched."""
    with torch.random.fork_rng(devices=[]):
        # Only the CPU generator: init runs on CPU, and CUDA's RNG state is not ours to reseed.
        torch.default_generator.manual_seed(seed)
        if spec.kind == "logreg":
            model: nn.Module = nn.Sequential(nn.Linear(spec.n_features, spec.n_classes))
        elif spec.kind == "mlp":
            model = _mlp(spec.n_features, spec.hidden, spec.n_classes)
        else:
            model = SmallCNN(spec.image_shape, spec.hidden[0], spec.n_classes)
    return model.to(torch.float32)


def get_weights(model: nn.Module) -> Weights:
    """float32 numpy copies of the state_dict, in its order."""
    out: Weights = {}
    for name, tensor in model.state_dict().items():
        if not tensor.is_floating_point():
            raise TypeError(f"{name!r} is not a float tensor; these models carry only parameters")
        out[name] = tensor.detach().cpu().numpy().astype(np.float32, copy=True)
    return out


def weight_views(model: nn.Module) -> Weights:
    """Read-only float32 numpy views of the state_dict, in its order: no copy, so they show the
    model as it is when read. For a caller that is done with the model until it has used them
    (a client sending its update before it loads the next round's model); else get_weights."""
    out: Weights = {}
    for name, tensor in model.state_dict().items():
        if tensor.dtype != torch.float32:
            raise TypeError(f"{name!r} is {tensor.dtype}, not float32; weight_views shares float32 storage only")
        view = tensor.detach().numpy()
        view.flags.writeable = False
        out[name] = view
    return out


def set_weights(model: nn.Module, weights: Mapping[str, np.ndarray]) -> None:
    """Loads `weights` into the model; names and shapes must match exactly."""
    current = model.state_dict()
    missing = sorted(set(current) - set(weights))
    unexpected = sorted(set(weights) - set(current))
    if missing or unexpected:
        raise WeightsMismatch(f"weights do not fit the model: missing {missing}, "
                              f"unexpected {unexpected}")
    for name, tensor in current.items():
        arr = np.asarray(weights[name])
        if tuple(arr.shape) != tuple(tensor.shape):
            raise WeightsMismatch(f"weights do not fit the model: {name!r} has shape "
                                  f"{tuple(arr.shape)}, the model needs {tuple(tensor.shape)}")
    for name, tensor in current.items():
        # Straight into the parameter's storage (state_dict tensors share it): no model-sized
        # temporary, and `weights` may be read-only views of a received message.
        np.copyto(tensor.detach().numpy(), np.asarray(weights[name]), casting="same_kind")


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
