"""Built-in backbones: ``mlp``, ``conv4`` and ``resnet12`` (plus torchvision models when present)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from mtl.backbones.base import Backbone, batch_norm_2d, positive_int
from mtl.backbones.registry import register_backbone
from mtl.errors import ConfigError


def _image_shape(in_channels: int, image_size: int | Sequence[int]) -> tuple[int, int, int]:
    positive_int("in_channels", in_channels)
    if isinstance(image_size, int):
        h = w = image_size
    else:
        h, w = (int(s) for s in image_size)
    positive_int("image_size", h)
    positive_int("image_size", w)
    return in_channels, h, w


@register_backbone("mlp")
def mlp(
    in_features: int = 1,
    hidden: Sequence[int] = (40, 40),
    num_classes: int | None = 1,
    activation: str = "relu",
) -> Backbone:
    """Multi-layer perceptron; the default is the 1-40-40-1 sinusoid net of Finn et al. 2017.

    ``hidden`` lists the hidden layer sizes; the head (``num_classes`` outputs, default 1) is the
    last linear layer. Image inputs are flattened.
    """
    positive_int("in_features", in_features)
    acts = {"relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU}
    if activation not in acts:
        raise ConfigError(f"activation must be one of {sorted(acts)}, got {activation!r}")
    trunk = nn.Sequential()
    trunk.add_module("flatten", nn.Flatten())
    width = in_features
    for i, size in enumerate(hidden):
        positive_int(f"hidden[{i}]", size)
        trunk.add_module(f"fc{i + 1}", nn.Linear(width, size))
        trunk.add_module(f"act{i + 1}", acts[activation]())
        width = size
    return Backbone(trunk, width, (in_features,), num_classes)


class ConvBlock(nn.Sequential):
    """3x3 convolution, BatchNorm, ReLU, 2x2 max-pool: the unit of ``conv4``."""

    def __init__(self, cin: int, cout: int, track_running_stats: bool = True, pool: bool = True) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, padding=1)
        self.norm = batch_norm_2d(cout, track_running_stats)
        self.relu = nn.ReLU()
        self.pool = nn.MaxPool2d(2) if pool else nn.Identity()


@register_backbone("conv4")
def conv4(
    in_channels: int = 1,
    image_size: int | Sequence[int] = 28,
    hidden: int | None = None,
    num_blocks: int = 4,
    num_classes: int | None = None,
    track_running_stats: bool = True,
    final_pool: bool = True,
) -> Backbone:
    """Four blocks of [3x3 conv, BatchNorm, ReLU, 2x2 max-pool] (Vinyals et al. 2016; Finn et al. 2017).

    64 filters for 1x28x28 Omniglot-sized inputs; 32 filters for 3x84x84 (miniImageNet) inputs
    unless ``hidden`` says otherwise. ``track_running_stats=False`` gives MAML's BatchNorm
    convention (batch statistics at train and test time). ``final_pool=False`` leaves out the
    last block's max-pool: the features are its whole map (at 28x28, 64x3x3 = 576 instead of 64),
    at the same cost and with the same parameters.
    """
    shape = _image_shape(in_channels, image_size)
    positive_int("num_blocks", num_blocks)
    if hidden is None:
        hidden = 32 if in_channels == 3 and min(shape[1:]) >= 64 else 64
    positive_int("hidden", hidden)
    if not isinstance(final_pool, bool):
        raise ConfigError(f"final_pool must be True or False, got {final_pool!r}")
    smallest = 2 ** (num_blocks if final_pool else num_blocks - 1)
    if min(shape[1:]) < smallest:
        raise ConfigError(
            f"conv4 with {num_blocks} blocks needs images of at least {smallest}x{smallest}, "
            f"got image_size={shape[1]}x{shape[2]}"
        )
    trunk = nn.Sequential()
    h, w = shape[1], shape[2]
    for i in range(num_blocks):
        cin = in_channels if i == 0 else hidden
        pool = final_pool or i < num_blocks - 1
        trunk.add_module(f"block{i + 1}", ConvBlock(cin, hidden, track_running_stats, pool))
        h, w = (h // 2, w // 2) if pool else (h, w)
    trunk.add_module("flatten", nn.Flatten())
    return Backbone(trunk, hidden * h * w, shape, num_classes)


class ResidualBlock(nn.Module):
    """Three 3x3 conv-BN-LeakyReLU layers with a 1x1 conv shortcut, then 2x2 max-pool (ResNet-12)."""

    def __init__(self, cin: int, cout: int, track_running_stats: bool = True) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
        self.bn1 = batch_norm_2d(cout, track_running_stats)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = batch_norm_2d(cout, track_running_stats)
        self.conv3 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn3 = batch_norm_2d(cout, track_running_stats)
        self.shortcut = nn.Sequential(
            nn.Conv2d(cin, cout, 1, bias=False), batch_norm_2d(cout, track_running_stats)
        )
        self.act = nn.LeakyReLU(0.1)
        self.pool = nn.MaxPool2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act(self.bn1(self.conv1(x)))
        out = self.act(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.pool(self.act(out + self.shortcut(x)))


@register_backbone("resnet12")
def resnet12(
    in_channels: int = 1,
    image_size: int | Sequence[int] = 28,
    widths: Sequence[int] = (64, 160, 320, 640),
    num_classes: int | None = None,
    track_running_stats: bool = True,
) -> Backbone:
    """The few-shot ResNet-12 (Oreshkin et al. 2018; Lee et al. 2019): 4 residual blocks, avg-pool.

    Each block is three 3x3 conv-BN-LeakyReLU(0.1) layers with a 1x1 shortcut and 2x2 max-pool;
    global average pooling gives ``widths[-1]`` features. Accepts any image size of at least 16.
    """
    shape = _image_shape(in_channels, image_size)
    if min(shape[1:]) < 16:
        raise ConfigError(f"resnet12 needs images of at least 16x16, got image_size={shape[1:]}")
    trunk = nn.Sequential()
    cin = in_channels
    for i, width in enumerate(widths):
        positive_int(f"widths[{i}]", width)
        trunk.add_module(f"block{i + 1}", ResidualBlock(cin, width, track_running_stats))
        cin = width
    trunk.add_module("pool", nn.AdaptiveAvgPool2d(1))
    trunk.add_module("flatten", nn.Flatten())
    return Backbone(trunk, cin, shape, num_classes, accepts_any_size=True)


def _register_torchvision() -> None:
    try:
        import torchvision.models as tvm  # noqa: PLC0415
    except Exception:  # torchvision absent or broken: the built-ins still work
        return

    def make(arch: str):  # noqa: ANN202
        def build(
            in_channels: int = 3,
            image_size: int | Sequence[int] = 224,
            num_classes: int | None = None,
            weights: str | None = None,
        ) -> Backbone:
            shape = _image_shape(in_channels, image_size)
            net = getattr(tvm, arch)(weights=weights)
            if in_channels != 3:
                old = net.conv1
                net.conv1 = nn.Conv2d(in_channels, old.out_channels, old.kernel_size,
                                      old.stride, old.padding, bias=False)
            num_ftrs = net.fc.in_features
            net.fc = nn.Identity()
            return Backbone(net, num_ftrs, shape, num_classes, accepts_any_size=True)

        build.__doc__ = f"torchvision's {arch} (He et al. 2016); its ``fc`` is the toolkit's head."
        return build

    for arch in ("resnet18", "resnet34", "resnet50"):
        register_backbone(arch)(make(arch))


_register_torchvision()
