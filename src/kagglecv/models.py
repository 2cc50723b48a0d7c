"""Models: every architecture is created through timm's registry, the project's own included.

The project registers the classics its users learn from (`softmax_regression`, `mlp`,
`vgg_style`) and its fast default (`kcv_cnn`) with `timm.models.register_model`, so
`model: resnet18` and `model: kcv_cnn` are built the same way by `build_model`.
"""

from __future__ import annotations

import difflib
import math
import os
from pathlib import Path

import timm
import torch
from huggingface_hub import constants as hf_constants
from timm.models import load_state_dict, register_model
from timm.models._hub import check_cached_file
from torch import nn


class ModelError(ValueError):
    """`model` names no architecture in timm's registry, or `pretrained` no usable weights."""


# Models of ours whose layers depend on the image size (a flattened input, or kcv_cnn's width).
_TAKES_IMG_SIZE = {"kcv_cnn", "softmax_regression", "mlp", "vgg_style"}
_OURS = set(_TAKES_IMG_SIZE)


def _cfg(**kwargs) -> dict:
    return {"num_classes": 10, "input_size": (1, 28, 28), "mean": (0.5,), "std": (0.5,), **kwargs}


def _conv_bn_relu(in_chans: int, out_chans: int) -> list[nn.Module]:
    return [nn.Conv2d(in_chans, out_chans, 3, padding=1, bias=False), nn.BatchNorm2d(out_chans), nn.ReLU(inplace=True)]


class _Classifier(nn.Module):
    """A features trunk and a linear head, with timm's classifier interface."""

    def __init__(self, features: nn.Module, num_features: int, num_classes: int, drop_rate: float) -> None:
        super().__init__()
        self.features = features
        self.num_features = num_features
        self.num_classes = num_classes
        self.drop = nn.Dropout(drop_rate)
        self.fc = nn.Linear(num_features, num_classes) if num_classes else nn.Identity()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.drop(x)
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, num_classes)
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.fc = nn.Linear(self.num_features, num_classes) if num_classes else nn.Identity()


@register_model
def kcv_cnn(
    num_classes: int = 10, in_chans: int = 1, img_size: int = 28, width: int = 0, drop_rate: float = 0.2, **_
) -> nn.Module:
    """Small, fast CNN: two stages of two Conv-BN-ReLU and a max pool, a Conv-BN-ReLU at a quarter of the
    side and one at an eighth (after another max pool), global average pooling.

    `width` 0: 32 filters in the first stage for images up to 48 px, 16 above. Small images are cheap
    per pixel, and 16 filters underfit digits drawn in random colours (on 4,000 coloured MNIST digits
    at 32 px, one fold: 0.969 with 16, 0.979 with 24, 0.983 with 32); at photo sizes 16 keep a CPU
    epoch affordable (the cost grows with width squared). The last pool and convolution see the
    whole of a 32-px image (a receptive field of about 40 px, 24 without them): the pooled features
    describe the digit rather than its strokes (one fold of the same digits: 0.9825 -> 0.986,
    validation loss 0.069 -> 0.045) for about 8 % more computation."""
    w1 = width or (32 if img_size <= 48 else 16)
    w2 = 2 * w1
    features = nn.Sequential(
        *_conv_bn_relu(in_chans, w1), *_conv_bn_relu(w1, w1), nn.MaxPool2d(2),
        *_conv_bn_relu(w1, w2), *_conv_bn_relu(w2, w2), nn.MaxPool2d(2),
        *_conv_bn_relu(w2, 2 * w2), nn.MaxPool2d(2, ceil_mode=True),  # ceil: 4-px images still fit
        *_conv_bn_relu(2 * w2, 2 * w2),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(),
    )  # fmt: skip
    model = _Classifier(features, 2 * w2, num_classes, drop_rate)
    model.pretrained_cfg = _cfg(num_classes=num_classes)
    return model


@register_model
def softmax_regression(num_classes: int = 10, in_chans: int = 1, img_size: int = 28, **_) -> nn.Module:
    """Multinomial logistic regression: one linear layer on the flattened pixels."""
    model = _Classifier(nn.Flatten(), in_chans * img_size * img_size, num_classes, 0.0)
    model.pretrained_cfg = _cfg(num_classes=num_classes, input_size=(in_chans, img_size, img_size))
    return model


@register_model
def mlp(
    num_classes: int = 10, in_chans: int = 1, img_size: int = 28, hidden: int = 256, drop_rate: float = 0.2, **_
) -> nn.Module:
    """Two hidden ReLU layers on the flattened pixels, as in the MNIST tutorials."""
    features = nn.Sequential(
        nn.Flatten(),
        nn.Linear(in_chans * img_size * img_size, hidden), nn.ReLU(inplace=True), nn.Dropout(drop_rate),
        nn.Linear(hidden, hidden // 2), nn.ReLU(inplace=True),
    )  # fmt: skip
    model = _Classifier(features, hidden // 2, num_classes, drop_rate)
    model.pretrained_cfg = _cfg(num_classes=num_classes, input_size=(in_chans, img_size, img_size))
    return model


@register_model
def vgg_style(num_classes: int = 11, in_chans: int = 3, img_size: int = 128, drop_rate: float = 0.5, **_) -> nn.Module:
    """The Food-11 homework's network: Conv-BN-ReLU-MaxPool blocks (64..512) and a fully connected head."""
    n_blocks = max(1, min(5, int(math.log2(img_size)) - 1))  # stop pooling at 2x2 or larger
    widths = [64, 128, 256, 512, 512][:n_blocks]
    layers: list[nn.Module] = []
    prev = in_chans
    for width in widths:
        layers += [*_conv_bn_relu(prev, width), nn.MaxPool2d(2)]
        prev = width
    side = img_size // 2**n_blocks
    layers += [nn.Flatten(), nn.Linear(prev * side * side, 1024), nn.ReLU(inplace=True), nn.Dropout(drop_rate)]
    layers += [nn.Linear(1024, 512), nn.ReLU(inplace=True)]
    model = _Classifier(nn.Sequential(*layers), 512, num_classes, drop_rate)
    model.pretrained_cfg = _cfg(num_classes=num_classes, input_size=(in_chans, img_size, img_size))
    return model


def unknown_model(name: str) -> str | None:
    """What is wrong with `name` as a model, naming the closest names in timm's registry; None if it is one."""
    if timm.is_model(name):
        return None
    close = difflib.get_close_matches(name, timm.list_models(), n=5)
    hint = f"; closest names in timm's registry: {', '.join(close)}" if close else ""
    return f"model: unknown model {name!r}{hint} (any name from timm.list_models())"


def build_model(*, name: str, num_classes: int, in_chans: int, img_size: int, pretrained: str = "") -> nn.Module:
    """Create `name` from timm's registry with the data's channel and class counts.

    `pretrained`: "" for random initialisation, "timm" for the weights in timm's local cache
    (never downloaded), or the path of a weights file (a timm/torchvision state dict, or one of
    our checkpoints). The classifier is re-initialised when the class count differs, and the
    first convolution adapted when the channel count does (timm's rules).
    """
    problem = unknown_model(name)
    if problem:
        raise ModelError(problem)
    kwargs = {"num_classes": num_classes, "in_chans": in_chans, **({"img_size": img_size} if name in _TAKES_IMG_SIZE else {})}
    if not pretrained:
        return timm.create_model(name, pretrained=False, **kwargs)
    if pretrained == "timm":
        return _from_timm_cache(name, kwargs)
    path = Path(pretrained)
    if not path.is_file():
        raise ModelError(f"pretrained: weights file {path} not found; give an existing file, 'timm' for timm's cache, or ''")
    if name in _OURS:  # our models are not built through timm's pretrained-weights machinery
        model = timm.create_model(name, pretrained=False, **kwargs)
        _load_matching(model, load_state_dict(str(path)), path)
        return model
    return timm.create_model(name, pretrained=True, pretrained_cfg_overlay={"file": str(path)}, **kwargs)


def _from_timm_cache(name: str, kwargs: dict) -> nn.Module:
    """timm's pretrained weights, from the local Hugging Face or torch hub cache only."""
    os.environ["HF_HUB_OFFLINE"] = "1"  # read by huggingface_hub at import; the constant below at call time
    hf_constants.HF_HUB_OFFLINE = True
    cfg = timm.create_model(name, pretrained=False, **kwargs).pretrained_cfg
    missing = (
        f"pretrained: timm has no weights for {name!r} in the local cache. On a machine with internet run "
        f"python -c \"import timm; timm.create_model('{name}', pretrained=True)\" and copy ~/.cache/huggingface "
        "(or ~/.cache/torch/hub) here, or set pretrained to the path of a weights file"
    )
    if name in _OURS or not (cfg.get("hf_hub_id") or cfg.get("url")):
        raise ModelError(f"pretrained: {name!r} has no published weights; use pretrained: '' or a weights file")
    if not cfg.get("hf_hub_id") and not check_cached_file(cfg["url"]):
        raise ModelError(missing)
    try:
        return timm.create_model(name, pretrained=True, **kwargs)
    except (OSError, RuntimeError, ValueError) as err:  # huggingface_hub's offline errors are OSErrors
        raise ModelError(f"{missing} ({type(err).__name__}: {err})") from err


def _load_matching(model: nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    """Load the tensors of `state` whose name and shape match; the rest (a new head) stays random."""
    own = model.state_dict()
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not usable:
        raise ModelError(f"pretrained: {path} holds no weights that fit this model; was it saved for another one?")
    model.load_state_dict(usable, strict=False)


def model_stats(model: nn.Module, in_chans: int) -> tuple[list[float], list[float]] | None:
    """The normalisation (mean, std) the model's pretrained weights expect, per input channel."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    if "mean" not in cfg or "std" not in cfg:
        return None
    mean, std = list(cfg["mean"]), list(cfg["std"])
    if len(mean) != in_chans:  # e.g. grey images into RGB-trained weights: timm sums the first conv
        mean, std = [sum(mean) / len(mean)] * in_chans, [sum(std) / len(std)] * in_chans
    return mean, std
