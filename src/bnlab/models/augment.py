"""Keras 3's random image augmentation layers: RandomFlip, RandomRotation, RandomZoom,
RandomTranslation, RandomContrast and RandomBrightness.

Each is the identity in inference (``model.eval()``, Keras's ``training=False``) and
draws a new transformation per image in training, as Keras does. The draws come from
torch's RNG (like :class:`~bnlab.models.layers.Dropout`; Keras's ``seed`` is accepted
and ignored). Given the same draws, the outputs equal Keras's (tested against
``transform_images`` of Keras 3): :meth:`_Augmentation.draw` makes the draws and
:meth:`_Augmentation.apply` is the deterministic transformation of them.

Images travel channel-first inside a model: ``x`` is ``(N, C, H, W)`` and the output has
the same shape and dtype.

The geometric layers (rotation, zoom, translation) map every output pixel ``(row, col)``
to an input point with a 2 x 3 matrix per image, Keras's (and TensorFlow's) projective
transform without the projective part::

    x_in = a0 * col + a1 * row + a2        y_in = b0 * col + b1 * row + b2

and read the input there (:func:`affine_transform`): ``"bilinear"`` weighs the four
pixels around the point, ``"nearest"`` takes the closest one (rounding half to even).
Points outside the image are read as ``fill_mode`` says (``abcd`` is a row):
``"reflect"`` ``dcba|abcd|dcba``, ``"wrap"`` ``abcd|abcd|abcd``, ``"nearest"``
``aaaa|abcd|dddd``, ``"constant"`` ``kkkk|abcd|kkkk`` with ``k = fill_value``.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor, nn

__all__ = [
    "FILL_MODES",
    "FLIP_MODES",
    "INTERPOLATIONS",
    "RandomBrightness",
    "RandomContrast",
    "RandomFlip",
    "RandomRotation",
    "RandomTranslation",
    "RandomZoom",
    "affine_transform",
]

FillMode = Literal["reflect", "wrap", "constant", "nearest"]
Interpolation = Literal["bilinear", "nearest"]
FILL_MODES = ("reflect", "wrap", "constant", "nearest")
INTERPOLATIONS = ("bilinear", "nearest")
FLIP_MODES = ("horizontal", "vertical", "horizontal_and_vertical")
Range = tuple[float, float]


def _fixed_index(index: Tensor, size: int, fill_mode: str) -> Tensor:
    """Integer positions outside ``[0, size)`` mapped inside as ``fill_mode`` says
    (``"constant"`` clamps: :func:`affine_transform` replaces those reads by the fill)."""
    if fill_mode == "wrap":
        return index.remainder(size)
    if fill_mode == "reflect":  # period 2 * size: 0..size-1, then size-1..0
        folded = index.remainder(2 * size)
        return torch.where(folded < size, folded, 2 * size - 1 - folded)
    return index.clamp(0, size - 1)


def affine_transform(
    images: Tensor,
    matrices: Tensor,
    interpolation: Interpolation = "bilinear",
    fill_mode: FillMode = "constant",
    fill_value: float = 0.0,
) -> Tensor:
    """Resample each image at the points its matrix maps the output pixels to.

    Args:
        images: ``(N, C, H, W)`` floating point.
        matrices: ``(N, 6)`` rows ``(a0, a1, a2, b0, b1, b2)``: output pixel
            ``(row, col)`` reads input point ``(b0 col + b1 row + b2, a0 col + a1 row + a2)``
            (Keras's transform vector without its two projective entries).
        interpolation: ``"bilinear"`` or ``"nearest"``.
        fill_mode: how points outside the image read (see the module docstring).
        fill_value: the value read outside with ``"constant"``.

    Returns:
        ``(N, C, H, W)``, the dtype of ``images``.
    """
    n, c, h, w = images.shape
    m = matrices.to(images.dtype if images.is_floating_point() else torch.float32)
    rows = torch.arange(h, dtype=m.dtype, device=images.device).view(1, h, 1)
    cols = torch.arange(w, dtype=m.dtype, device=images.device).view(1, 1, w)
    a0, a1, a2, b0, b1, b2 = (m[:, k].view(n, 1, 1) for k in range(6))
    y = rows * b1 + cols * b0 + b2  # (N, H, W) input rows
    x = rows * a1 + cols * a0 + a2  # input columns
    if interpolation == "nearest":
        taps = [(torch.round(y).long(), torch.round(x).long(), None)]
    else:
        y0, x0 = torch.floor(y), torch.floor(x)
        wy, wx = y - y0, x - x0
        y0, x0 = y0.long(), x0.long()
        taps = [(y0, x0, (1 - wy) * (1 - wx)), (y0, x0 + 1, (1 - wy) * wx),
                (y0 + 1, x0, wy * (1 - wx)), (y0 + 1, x0 + 1, wy * wx)]
    flat = images.reshape(n, c, h * w)
    out = None
    for yi, xi, weight in taps:
        where = _fixed_index(yi, h, fill_mode) * w + _fixed_index(xi, w, fill_mode)
        read = flat.gather(2, where.view(n, 1, h * w).expand(n, c, h * w)).view(n, c, h, w)
        if fill_mode == "constant":
            inside = ((yi >= 0) & (yi < h) & (xi >= 0) & (xi < w)).unsqueeze(1)
            read = torch.where(inside, read, torch.full_like(read, fill_value))
        term = read if weight is None else read * weight.unsqueeze(1)
        out = term if out is None else out + term
    assert out is not None
    return out.to(images.dtype)


def _uniform(n: int, bounds: Range, like: Tensor) -> Tensor:
    """``n`` draws from U[lower, upper), float32 (Keras draws its factors in float32)."""
    lower, upper = bounds
    return torch.rand(n, device=like.device) * (upper - lower) + lower


class _Augmentation(nn.Module):
    """An image augmentation: the identity in inference, ``apply(x, draw(x))`` in training."""

    def forward(self, x: Tensor) -> Tensor:
        if not self.training:
            return x
        if x.dim() != 4:
            raise ValueError(
                f"{type(self).__name__} expects images (batch, height, width, channels); "
                f"got a tensor of shape {tuple(x.shape)}"
            )
        return self.apply(x, self.draw(x))

    def draw(self, x: Tensor) -> Tensor:
        """The random parameters of one transformation per image of ``x`` (N, C, H, W)."""
        raise NotImplementedError

    def apply(self, x: Tensor, draws: Tensor) -> Tensor:
        """``x`` (N, C, H, W) transformed with ``draws`` (one row per image)."""
        raise NotImplementedError


class RandomFlip(_Augmentation):
    """Keras ``RandomFlip``: each image flipped left-right (``"horizontal"``), top-bottom
    (``"vertical"``) or both (``"horizontal_and_vertical"``) with probability 1/2.

    Like Keras 3, the two flips of ``"horizontal_and_vertical"`` share one draw: an image
    is flipped both ways (a half-turn) or not at all. ``draws``: (N,) booleans.
    """

    def __init__(self, mode: str = "horizontal_and_vertical") -> None:
        super().__init__()
        if mode not in FLIP_MODES:
            raise ValueError(f"RandomFlip mode must be one of {', '.join(FLIP_MODES)}; got {mode!r}")
        self.mode = mode

    def draw(self, x: Tensor) -> Tensor:
        return torch.rand(x.shape[0], device=x.device) <= 0.5

    def apply(self, x: Tensor, draws: Tensor) -> Tensor:
        dims = {"horizontal": [3], "vertical": [2], "horizontal_and_vertical": [2, 3]}[self.mode]
        return torch.where(draws.view(-1, 1, 1, 1), x.flip(dims), x)

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}"


class _Geometric(_Augmentation):
    """An augmentation by :func:`affine_transform` with matrices made from the draws."""

    def __init__(self, fill_mode: str, interpolation: str, fill_value: float) -> None:
        super().__init__()
        if fill_mode not in FILL_MODES:
            raise ValueError(f"fill_mode must be one of {', '.join(FILL_MODES)}; got {fill_mode!r}")
        if interpolation not in INTERPOLATIONS:
            raise ValueError(
                f"interpolation must be one of {', '.join(INTERPOLATIONS)}; got {interpolation!r}"
            )
        self.fill_mode, self.interpolation, self.fill_value = fill_mode, interpolation, fill_value

    def matrices(self, draws: Tensor, height: int, width: int) -> Tensor:
        """(N, 6) matrices of :func:`affine_transform` for images of ``height`` x ``width``."""
        raise NotImplementedError

    def apply(self, x: Tensor, draws: Tensor) -> Tensor:
        return affine_transform(x, self.matrices(draws, x.shape[2], x.shape[3]),
                                self.interpolation, self.fill_mode, self.fill_value)

    def extra_repr(self) -> str:
        return (f"fill_mode={self.fill_mode!r}, interpolation={self.interpolation!r}, "
                f"fill_value={self.fill_value}")


class RandomRotation(_Geometric):
    """Keras ``RandomRotation``: each image turned about its center by an angle drawn from
    ``factor * 360`` degrees, ``factor = (lower, upper)`` fractions of a full turn
    (positive: counter-clockwise). ``draws``: (N,) angles in degrees.

    About the center ``(cx, cy) = ((W - 1) / 2, (H - 1) / 2)``, angle ``t``::

        a = (cos t, -sin t, cx - cx cos t + cy sin t)
        b = (sin t,  cos t, cy - cx sin t - cy cos t)
    """

    def __init__(self, factor: Range, fill_mode: str = "reflect",
                 interpolation: str = "bilinear", fill_value: float = 0.0) -> None:
        super().__init__(fill_mode, interpolation, fill_value)
        self.factor = factor

    def draw(self, x: Tensor) -> Tensor:
        return _uniform(x.shape[0], (self.factor[0] * 360.0, self.factor[1] * 360.0), x)

    def matrices(self, draws: Tensor, height: int, width: int) -> Tensor:
        angle = draws * (math.pi / 180.0)
        cx, cy = 0.5 * (width - 1), 0.5 * (height - 1)
        cos, sin = torch.cos(angle), torch.sin(angle)
        return torch.stack([cos, -sin, cx - cx * cos - cy * -sin,
                            sin, cos, cy - cx * sin - cy * cos], dim=1)

    def extra_repr(self) -> str:
        return f"factor={self.factor}, " + super().extra_repr()


class RandomZoom(_Geometric):
    """Keras ``RandomZoom``: each image scaled about its center by ``1 + f`` with ``f``
    drawn from ``height_factor`` (vertically) and ``width_factor`` (horizontally; None:
    the vertical draw, the aspect kept). ``f > 0`` zooms out, ``f < 0`` in.
    ``draws``: (N, 2) zooms (horizontal, vertical)::

        a = (zx, 0, (W - 1) / 2 (1 - zx))        b = (0, zy, (H - 1) / 2 (1 - zy))
    """

    def __init__(self, height_factor: Range, width_factor: Range | None = None,
                 fill_mode: str = "reflect", interpolation: str = "bilinear",
                 fill_value: float = 0.0) -> None:
        super().__init__(fill_mode, interpolation, fill_value)
        self.height_factor, self.width_factor = height_factor, width_factor

    def draw(self, x: Tensor) -> Tensor:
        n = x.shape[0]
        zy = _uniform(n, (1.0 + self.height_factor[0], 1.0 + self.height_factor[1]), x)
        if self.width_factor is None:
            return torch.stack([zy, zy], dim=1)
        zx = _uniform(n, (1.0 + self.width_factor[0], 1.0 + self.width_factor[1]), x)
        return torch.stack([zx, zy], dim=1)

    def matrices(self, draws: Tensor, height: int, width: int) -> Tensor:
        zx, zy = draws[:, 0], draws[:, 1]
        zero = torch.zeros_like(zx)
        return torch.stack([zx, zero, (width - 1.0) / 2.0 * (1.0 - zx),
                            zero, zy, (height - 1.0) / 2.0 * (1.0 - zy)], dim=1)

    def extra_repr(self) -> str:
        return (f"height_factor={self.height_factor}, width_factor={self.width_factor}, "
                + super().extra_repr())


class RandomTranslation(_Geometric):
    """Keras ``RandomTranslation``: each image shifted by ``f * H`` rows and ``g * W``
    columns, ``f`` drawn from ``height_factor``, ``g`` from ``width_factor`` (positive:
    down and right). ``draws``: (N, 2) shifts in pixels (columns, rows)::

        a = (1, 0, -dx)        b = (0, 1, -dy)
    """

    def __init__(self, height_factor: Range, width_factor: Range,
                 fill_mode: str = "reflect", interpolation: str = "bilinear",
                 fill_value: float = 0.0) -> None:
        super().__init__(fill_mode, interpolation, fill_value)
        self.height_factor, self.width_factor = height_factor, width_factor

    def draw(self, x: Tensor) -> Tensor:
        n, height, width = x.shape[0], x.shape[2], x.shape[3]
        dy = _uniform(n, self.height_factor, x) * height
        dx = _uniform(n, self.width_factor, x) * width
        return torch.stack([dx, dy], dim=1)

    def matrices(self, draws: Tensor, height: int, width: int) -> Tensor:
        one, zero = torch.ones_like(draws[:, 0]), torch.zeros_like(draws[:, 0])
        return torch.stack([one, zero, -draws[:, 0], zero, one, -draws[:, 1]], dim=1)

    def extra_repr(self) -> str:
        return (f"height_factor={self.height_factor}, width_factor={self.width_factor}, "
                + super().extra_repr())


class RandomContrast(_Augmentation):
    """Keras ``RandomContrast``: ``clip((x - mean) * k + mean, value_range)`` per image,
    ``mean`` over each channel's pixels, ``k`` drawn from ``[1 - lower, 1 + upper]`` for
    ``factor = (lower, upper)``. Keras 3 reads one number ``f`` as ``(0, f)``: contrast
    only rises. ``draws``: (N,) contrast factors.
    """

    def __init__(self, factor: Range, value_range: Range = (0.0, 255.0)) -> None:
        super().__init__()
        self.factor, self.value_range = factor, value_range

    def draw(self, x: Tensor) -> Tensor:
        return _uniform(x.shape[0], (1.0 - self.factor[0], 1.0 + self.factor[1]), x)

    def apply(self, x: Tensor, draws: Tensor) -> Tensor:
        mean = x.mean(dim=2, keepdim=True).mean(dim=3, keepdim=True)  # Keras: rows, then columns
        k = draws.to(x.dtype).view(-1, 1, 1, 1)
        return ((x - mean) * k + mean).clamp(*self.value_range)

    def extra_repr(self) -> str:
        return f"factor={self.factor}, value_range={self.value_range}"


class RandomBrightness(_Augmentation):
    """Keras ``RandomBrightness``: ``clip(x + d * (high - low), value_range)`` per image,
    ``d`` drawn from ``factor = (lower, upper)``, ``value_range = (low, high)``.
    ``draws``: (N,) shifts ``d * (high - low)``.
    """

    def __init__(self, factor: Range, value_range: Range = (0.0, 255.0)) -> None:
        super().__init__()
        self.factor, self.value_range = factor, value_range

    def draw(self, x: Tensor) -> Tensor:
        low, high = self.value_range
        return _uniform(x.shape[0], self.factor, x) * (high - low)

    def apply(self, x: Tensor, draws: Tensor) -> Tensor:
        return (x + draws.to(x.dtype).view(-1, 1, 1, 1)).clamp(*self.value_range)

    def extra_repr(self) -> str:
        return f"factor={self.factor}, value_range={self.value_range}"
