"""Recurrent layer types (LSTM, GRU, SimpleRNN) and the wrappers Bidirectional and TimeDistributed.

Keras 3's arguments; see :mod:`bnlab.models.recurrent` for the semantics. Options
bnlab cannot honour (``return_state``, ``stateful``, ``time_major``) accept only their
default. Wrappers take the inner layer as a layer table (``{type = "LSTM", units = 8}``)
or Keras's serialized entry (``{"class_name": "LSTM", "config": {...}}``).
"""

from __future__ import annotations

from typing import Any

from bnlab.models import arguments as A
from bnlab.models import recurrent as R
from bnlab.models.activations import get_activation
from bnlab.models.arguments import Arg
from bnlab.models.layer_type import LayerType, Shape, check_rank, init_, layer_type
from bnlab.models.types_core import weight_args

__all__ = ["RECURRENT_TYPES"]

_CELLS = {"LSTM": R.LSTM, "GRU": R.GRU, "SimpleRNN": R.SimpleRNN}


def _sequence_mask(args: dict[str, Any]) -> str:
    return "use" if args["return_sequences"] else "consume"


def _rnn(layer: str):
    def build(args: dict[str, Any], shape: Shape, channels_first: bool):
        check_rank(layer, shape, (3,), "(batch, timesteps, features)")
        if shape[-1] is None:
            raise ValueError(f"{layer} needs a known number of input features; got None")
        units = args["units"]
        kwargs: dict[str, Any] = {}
        if layer != "SimpleRNN":
            kwargs["recurrent_activation"] = get_activation(args["recurrent_activation"])
        if layer == "GRU":
            kwargs["reset_after"] = args["reset_after"]
        module = _CELLS[layer](
            shape[-1], units, return_sequences=args["return_sequences"],
            use_bias=args["use_bias"], activation=get_activation(args["activation"]),
            go_backwards=args["go_backwards"], zero_output_for_mask=args["zero_output_for_mask"],
            dropout=args["dropout"], recurrent_dropout=args["recurrent_dropout"], **kwargs,
        )
        init_(args["kernel_initializer"], module.weight_ih)
        init_(args["recurrent_initializer"], module.weight_hh)
        init_(args["bias_initializer"], module.bias)
        if layer == "LSTM" and args["unit_forget_bias"] and module.bias is not None:
            module.bias.data[units : 2 * units] = 1.0
        return module, ((shape[0], units) if args["return_sequences"] else (units,))

    return build


def _rnn_type(layer: str) -> LayerType:
    args: dict[str, Arg] = {
        "units": Arg(A.integer(min=1)),
        "activation": Arg(A.activation, "tanh"),
        "use_bias": Arg(A.boolean, True),
        **weight_args("kernel", "glorot_uniform"),
        **weight_args("recurrent", "orthogonal"),
        **weight_args("bias", "zeros"),
        "activity_regularizer": Arg(A.none_only("activity regularizers are not supported"), None),
        "dropout": Arg(A.real(0.0, 1.0), 0.0),
        "recurrent_dropout": Arg(A.real(0.0, 1.0), 0.0),
        "seed": Arg(A.anything, None),
        "return_sequences": Arg(A.boolean, False),
        "return_state": Arg(A.false_only("return_state is not supported"), False),
        "go_backwards": Arg(A.boolean, False),
        "stateful": Arg(A.false_only("stateful recurrent layers are not supported"), False),
        "unroll": Arg(A.boolean, False),
        "zero_output_for_mask": Arg(A.boolean, False),
        "time_major": Arg(A.false_only("time-major input is not supported"), False),
        "implementation": Arg(A.anything, 2),
    }
    if layer != "SimpleRNN":
        args["recurrent_activation"] = Arg(A.activation, "sigmoid")
    if layer == "LSTM":
        args["unit_forget_bias"] = Arg(A.boolean, True)
    if layer == "GRU":
        args["reset_after"] = Arg(A.boolean, True)
    return layer_type(layer, layer.lower() if layer != "SimpleRNN" else "simple_rnn", args,
                      _rnn(layer), "channels_last", mask=_sequence_mask)


def _inner(value: Any, key: str):
    """The wrapped layer's spec (parsed lazily: the registry imports this module)."""
    from bnlab.models.errors import SpecError
    from bnlab.models.spec import parse_layer

    try:
        return parse_layer(value, where=key)
    except SpecError as error:
        raise A.InvalidArgError(str(error)) from None


def _bidirectional_validate(args: dict[str, Any]) -> None:
    for key in ("layer", "backward_layer"):
        if args.get(key) is not None:
            spec = _inner(args[key], key)
            if spec.type not in _CELLS:
                raise A.InvalidArgError(
                    f"Bidirectional wraps LSTM, GRU or SimpleRNN; got {spec.type}", key=key
                )


def _bidirectional_specs(args: dict[str, Any]):
    forward = _inner(args["layer"], "layer")
    sequences = forward.resolved_args()["return_sequences"]
    name = forward.args.get("name") or forward.layer_type.auto_name
    if args["backward_layer"] is not None:
        backward = _inner(args["backward_layer"], "backward_layer")
    else:
        backward = forward.replace_args({"name": f"backward_{name}", "go_backwards": not
                                         forward.resolved_args()["go_backwards"]})
    # Keras's Bidirectional forces zero outputs at masked steps when returning sequences.
    fix = {"zero_output_for_mask": sequences}
    return forward.replace_args(fix), backward.replace_args(fix)


def _build_bidirectional(args: dict[str, Any], shape: Shape, channels_first: bool):
    from bnlab.models.builder import build_layer

    forward, backward = _bidirectional_specs(args)
    f = build_layer(forward, "forward", shape, False)
    b = build_layer(backward, "backward", shape, False)
    if f.output_shape != b.output_shape and args["merge_mode"] != "concat":
        raise ValueError(
            f"Bidirectional merge_mode {args['merge_mode']!r} needs equal forward and backward "
            f"outputs; got {f.output_shape} and {b.output_shape}"
        )
    module = R.Bidirectional(f.module, b.module, args["merge_mode"])  # type: ignore[arg-type]
    units = f.output_shape[-1] + b.output_shape[-1] if args["merge_mode"] == "concat" else \
        f.output_shape[-1]
    return module, (*f.output_shape[:-1], units)


def _bidirectional_mask(args: dict[str, Any]) -> str:
    forward = _inner(args["layer"], "layer")
    return _sequence_mask(forward.resolved_args())


def _build_time_distributed(args: dict[str, Any], shape: Shape, channels_first: bool):
    from bnlab.models.builder import build_layer
    from bnlab.models.layout import layout_after, to_last

    check_rank("TimeDistributed", shape, (3, 4, 5), "(batch, timesteps, ...)")
    inner = _inner(args["layer"], "layer")
    built = build_layer(inner, inner.args.get("name") or inner.layer_type.auto_name,
                        shape[1:], False)
    if inner.layer_type.inputs != 1:
        raise ValueError(f"TimeDistributed cannot wrap the merge layer {inner.type}")
    last = layout_after(built.channels_first_in, len(shape), len(built.output_shape) + 1)
    module = R.TimeDistributed(built.module, permute_in=built.permute,
                               permute_out=to_last(len(built.output_shape) + 1) if last else None)
    return module, (shape[0], *built.output_shape)


def _layer_check(value: Any) -> Any:
    """A layer table, Keras's serialized layer entry, or a LayerSpec (kept as its table)."""
    from bnlab.models.spec import LayerSpec

    if isinstance(value, LayerSpec):
        return A.freeze(value.to_dict())
    _inner(value, "layer")
    return A.freeze(value)


RECURRENT_TYPES: list[LayerType] = [
    *[_rnn_type(name) for name in _CELLS],
    layer_type(
        "Bidirectional", "bidirectional",
        {"layer": Arg(_layer_check), "backward_layer": Arg(_layer_check, None),
         "merge_mode": Arg(A.choice("concat", "sum", "mul", "ave"), "concat"),
         "weights": Arg(A.none_only("initial weights go through set_keras_weights"), None)},
        _build_bidirectional, "channels_last", validate=_bidirectional_validate,
        mask=_bidirectional_mask,
    ),
    layer_type("TimeDistributed", "time_distributed", {"layer": Arg(_layer_check)},
               _build_time_distributed, "channels_last", mask="keep"),
]
