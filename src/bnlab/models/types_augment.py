"""Layer types of Keras 3's random image augmentation: RandomFlip, RandomRotation,
RandomZoom, RandomTranslation, RandomContrast, RandomBrightness.

Arguments, defaults and the accepted factor ranges are Keras 3's; a factor is a number
``f`` (the range ``(-|f|, |f|)``; RandomContrast ``(0, f)``, as Keras 3 reads it) or a
pair ``[lower, upper]``, stored as given. ``seed`` is accepted and ignored (the draws
come from torch's RNG). The layers are in :mod:`bnlab.models.augment`; they run
channel-first inside the model and are the identity in inference.
"""

from __future__ import annotations

from typing import Any

from bnlab.models import arguments as A
from bnlab.models import augment as G
from bnlab.models.arguments import Arg
from bnlab.models.layer_type import LayerType, Shape, check_rank, layer_type

__all__ = ["AUGMENT_TYPES", "factor_range"]


def _factor(lowest: float, highest: float, *, open_low: bool = False) -> A.Check:
    """A number or a pair of numbers [lower, upper], each within Keras's bounds for the layer."""
    number = A.real(lowest, highest, min_open=open_low)
    bounds = f"{'>' if open_low else '>='} {lowest:g} and <= {highest:g}"

    def check(value: Any) -> float | tuple[float, float]:
        try:
            if isinstance(value, list | tuple) and len(value) == 2:
                return (number(value[0]), number(value[1]))
            return number(value)
        except A.InvalidArgError:
            raise A.InvalidArgError(
                f"expected a number {bounds}, or a list of two of them [lower, upper]; "
                f"got {A.received(value)}"
            ) from None

    return check


def factor_range(value: float | tuple[float, float], floor: float | None = None) -> G.Range:
    """A checked factor as ``(lower, upper)``: ``f -> (-|f|, |f|)`` (``lower`` raised to
    ``floor`` if given, as Keras 3 does for RandomContrast), a pair sorted."""
    if isinstance(value, tuple):
        lower, upper = sorted(value)
        return lower, upper
    lower = -abs(value) if floor is None else max(-abs(value), floor)
    return lower, abs(value)


def _value_range(value: Any) -> tuple[float, float]:
    if isinstance(value, list | tuple) and len(value) == 2:
        try:
            low, high = A.real()(value[0]), A.real()(value[1])
        except A.InvalidArgError:
            pass
        else:
            if low < high:
                return low, high
    raise A.InvalidArgError(
        f"expected [low, high], two numbers with low < high (e.g. [0, 255]); got {A.received(value)}"
    )


_COMMON = {"seed": Arg(A.anything, None), "data_format": Arg(A.data_format, "channels_last")}
_FILL = {
    "fill_mode": Arg(A.choice(*G.FILL_MODES), "reflect"),
    "interpolation": Arg(A.choice(*G.INTERPOLATIONS), "bilinear"),
    "fill_value": Arg(A.real(), 0.0),
}
_RANGE = {"value_range": Arg(_value_range, (0.0, 255.0))}
_IMAGES = "(batch, height, width, channels)"


def _images(layer: str, shape: Shape) -> None:
    check_rank(layer, shape, (4,), _IMAGES)


def _build_flip(args: dict[str, Any], shape: Shape, channels_first: bool):
    _images("RandomFlip", shape)
    return G.RandomFlip(args["mode"]), shape


def _build_rotation(args: dict[str, Any], shape: Shape, channels_first: bool):
    _images("RandomRotation", shape)
    return G.RandomRotation(factor_range(args["factor"]), args["fill_mode"],
                            args["interpolation"], args["fill_value"]), shape


def _build_zoom(args: dict[str, Any], shape: Shape, channels_first: bool):
    _images("RandomZoom", shape)
    width = None if args["width_factor"] is None else factor_range(args["width_factor"])
    return G.RandomZoom(factor_range(args["height_factor"]), width, args["fill_mode"],
                        args["interpolation"], args["fill_value"]), shape


def _build_translation(args: dict[str, Any], shape: Shape, channels_first: bool):
    _images("RandomTranslation", shape)
    return G.RandomTranslation(factor_range(args["height_factor"]),
                               factor_range(args["width_factor"]), args["fill_mode"],
                               args["interpolation"], args["fill_value"]), shape


def _build_contrast(args: dict[str, Any], shape: Shape, channels_first: bool):
    _images("RandomContrast", shape)
    return G.RandomContrast(factor_range(args["factor"], floor=0.0), args["value_range"]), shape


def _build_brightness(args: dict[str, Any], shape: Shape, channels_first: bool):
    _images("RandomBrightness", shape)
    return G.RandomBrightness(factor_range(args["factor"]), args["value_range"]), shape


AUGMENT_TYPES: list[LayerType] = [
    layer_type("RandomFlip", "random_flip",
               {"mode": Arg(A.choice(*G.FLIP_MODES), "horizontal_and_vertical"), **_COMMON},
               _build_flip, "channels_first"),
    layer_type("RandomRotation", "random_rotation",
               {"factor": Arg(_factor(-1.0, 1.0)), **_FILL, **_COMMON},
               _build_rotation, "channels_first"),
    layer_type("RandomZoom", "random_zoom",
               {"height_factor": Arg(_factor(-1.0, 1.0, open_low=True)),
                "width_factor": Arg(A.optional(_factor(-1.0, 1.0, open_low=True)), None),
                **_FILL, **_COMMON},
               _build_zoom, "channels_first"),
    layer_type("RandomTranslation", "random_translation",
               {"height_factor": Arg(_factor(-1.0, 1.0)), "width_factor": Arg(_factor(-1.0, 1.0)),
                **_FILL, **_COMMON},
               _build_translation, "channels_first"),
    layer_type("RandomContrast", "random_contrast",
               {"factor": Arg(_factor(0.0, 1.0)), **_RANGE, **_COMMON},
               _build_contrast, "channels_first"),
    layer_type("RandomBrightness", "random_brightness",
               {"factor": Arg(_factor(-1.0, 1.0)), **_RANGE, **_COMMON},
               _build_brightness, "channels_first"),
]
