"""The attribution compiler: forward ONNX classifier -> "what the network sees" ONNX graph.

:func:`compile_attribution` extends the dream compiler (:mod:`models.compiler`,
:mod:`models.backward`): it copies the classifier's forward pass up to its logits, seeds the
explained class and walks the nodes in reverse with the dream compiler's per-op backward rules,
or, for LRP, with the relevance rules of this module. The result uses standard ONNX ops only
(opset 18: the dream step's ops plus elementwise ones) and runs in stock onnxruntime; it is
tested on the CPU provider (no GPU was at hand for this work, so CUDA is untested).

Graph interface (N images, K classes, S samples; all float32, N/H/W/S dynamic):

- inputs ``image`` (N, C, H, W): model-space input (after the model's own preprocessing, e.g.
  ``ClassifierModel.to_model_space``); ``target`` (N, K): the weight of each class in the
  explained score, usually one-hot.
- ``smoothgrad`` also takes ``noise`` (S, C, H, W): the noise added to each of the S copies of
  every image, in model-space units (the caller draws it, ``N(0, sigma^2)``).
- ``ig`` also takes ``baseline`` (N, C, H, W) and ``alphas`` (S,): positions on the straight path
  from the baseline (0) to the image (1); midpoints ``(k + 0.5) / S`` give the midpoint rule.
- outputs ``attribution`` (N, C, H, W), ``score`` (N,) = ``sum_k target * logits`` at the image,
  ``all_scores`` (N, K): the logits at the image; ``ig`` adds ``baseline_score`` (N,); the LRP
  methods add ``absorbed`` (N,): the relevance taken up by biases and stabilisers (so
  ``sum(attribution) + absorbed == score`` up to rounding, the conservation property).

Methods (``METHODS``):

- ``gradient``: d score / d image (saliency; Simonyan et al. 2014).
- ``gxi``: gradient * image (Shrikumar et al. 2016), relative to a zero model-space input.
- ``smoothgrad``: the mean gradient over S noisy copies (Smilkov et al. 2017), one batch.
- ``ig``: Integrated Gradients (Sundararajan et al. 2017): ``(x - x') * mean_s grad(x' +
  a_s (x - x'))``, one batch of S path points plus the two end points (their seeds are zero,
  they only give ``score`` and ``baseline_score``). Completeness: ``sum(attribution) ~=
  score - baseline_score``, the error shrinking with S.
- ``lrp-eps``: LRP with the epsilon rule on Conv, Gemm and MatMul (Bach et al. 2015):
  ``R_i = x_i * sum_j w_ij R_j / (z_j + eps * sign(z_j))`` (sign(0) = +1, biases in z, as zennit's
  ``Epsilon``). It is gradient * input through a backward whose linear layers divide by their
  stabilised output, which is how it is compiled: s = R / stab(z), c = W^T s (the dream
  compiler's backward rule for the op), R_in = x * c.
- ``lrp-ab``: the alpha-beta rule (Bach et al. 2015; Montavon et al. 2017, DTD, for z+ =
  alpha 1, beta 0), exactly as zennit's ``AlphaBeta`` / ``ZPlus``: positive part
  ``z+ = W+ x+ + b+ + W- x-``, negative part ``z- = W- x+ + b- + W+ x-``, and
  ``R_in = alpha (x+ W+^T s+ + x- W-^T s+) - beta (x+ W-^T s- + x- W+^T s-)`` with
  ``s+- = R / stab(z+-)``; ``alpha - beta == 1``, both >= 0.
- ``pattern``: PatternAttribution (Kindermans et al. 2018): the gradient backward from
  ``target * logits`` with every Conv and Gemm weight ``W`` replaced by ``W * A`` (the forward
  keeps ``W``), ``A`` the signal patterns :func:`fit_patterns` learns from images
  (:class:`Patterns`, saved as ``.npz`` without pickle). Grouped (depthwise) convolutions and
  MatMul layers have no fitted patterns and are refused with a clear error.

LRP on the other ops (as zennit's default composites do): Relu, LeakyRelu, Clip, Sigmoid,
HardSigmoid and HardSwish pass relevance unchanged; MaxPool gives a window's relevance to its
winner (the MaxPool gradient); AveragePool, GlobalAveragePool and ReduceMean share it in proportion to the
inputs (zennit's ``Norm``: ``R_i = x_i * Pool^T(R / stab(y))``); Add and Sub of two image
dependent tensors share it in proportion to each operand's contribution, and a constant
operand (a bias) absorbs its share; Concat, Split, Reshape, Flatten, Squeeze, Unsqueeze,
Transpose, Identity, Dropout and zero Pad move relevance with the tensor (their gradient);
BatchNormalization is folded into the Conv before it first (:func:`fold_batchnorm`), and one
that does not follow a Conv is refused. Elementwise Add, Sub, Mul and Div with a constant on
the path from the image to the first other op (the model's own input normalisation) pass
relevance unchanged, so the map is in input pixels. The explained relevance at the logits is
``target * logits`` (zennit starts from ``grad_output``; with a one-hot times the logit it
gives the same maps).

Errors: :class:`~dreamstate.engine.core.errors.ModelError` for an unknown method, bad rule
parameters, a model without one score per class, and an op without a backward (or LRP) rule on
the path, named with its node and the supported list, as the dream compiler does.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from dreamstate.engine.core.errors import ModelError
from dreamstate.models import backward
from dreamstate.models.backward import Context, Grad, Lowering
from dreamstate.models.compiler import Emitter, emit_forward, forward_context, take_grad
from dreamstate.models.graph import IR_VERSION, OPSET, ForwardGraph, Node, fold_pads, needed_nodes

log = logging.getLogger("dreamstate.models")

METHODS: tuple[str, ...] = ("gradient", "gxi", "smoothgrad", "ig", "lrp-eps", "lrp-ab", "pattern")
EXPLAIN_VERSION = "1"
_PUBLIC = ("image", "target", "noise", "baseline", "alphas")
_OUTPUTS = ("attribution", "score", "all_scores", "baseline_score", "absorbed")

# LRP rule families (see the module docstring).
_LRP_LINEAR = frozenset({"Conv", "Gemm", "MatMul"})
_LRP_PASS = frozenset({"Relu", "LeakyRelu", "Clip", "Sigmoid", "HardSigmoid", "HardSwish"})
_LRP_MOVE = frozenset({
    "MaxPool", "Concat", "Split", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose", "Identity", "Dropout",
    "Pad",
})
_LRP_PROPORTIONAL = frozenset({"AveragePool", "GlobalAveragePool", "ReduceMean"})
_LRP_ELEMENTWISE = frozenset({"Add", "Sub", "Mul", "Div"})
LRP_OPS: frozenset[str] = (
    _LRP_LINEAR | _LRP_PASS | _LRP_MOVE | _LRP_PROPORTIONAL | _LRP_ELEMENTWISE | backward.NO_GRADIENT
)


@dataclass(frozen=True)
class AttributionInfo:
    """What a compiled attribution graph expects: method, rule parameters, image channels,
    class count and the logits tensor it explains."""

    method: str
    classes: int
    channels: int | None
    logits: str
    epsilon: float
    alpha: float
    beta: float


def fold_batchnorm(nodes: Sequence[Node], consts: dict[str, np.ndarray]) -> tuple[list[Node], dict[str, np.ndarray]]:
    """Fold every inference BatchNormalization whose input is a Conv output read by nothing
    else into that Conv: ``W' = W * k``, ``b' = (b - mean) * k + beta`` with
    ``k = scale / sqrt(var + epsilon)`` per output channel (exact up to rounding). Returns the new
    node list and a new constants dict; BN nodes that cannot be folded stay."""
    consts = dict(consts)
    readers: dict[str, int] = {}
    for n in nodes:
        for i in n.inputs:
            if i:
                readers[i] = readers.get(i, 0) + 1
    producers = {o: n for n in nodes for o in n.outputs if o}
    replaced: dict[str, Node] = {}  # conv output -> folded conv
    dropped: set[int] = set()
    for idx, n in enumerate(nodes):
        if n.op != "BatchNormalization" or (len(n.outputs) > 1 and any(n.outputs[1:])):
            continue
        conv = producers.get(n.inputs[0])
        params = n.inputs[1:5]
        if (
            conv is None
            or conv.op != "Conv"
            or readers.get(n.inputs[0], 0) != 1
            or len(params) != 4
            or not all(p in consts for p in params)
            or conv.inputs[1] not in consts
            or (len(conv.inputs) > 2 and conv.inputs[2] and conv.inputs[2] not in consts)
        ):
            continue
        scale, beta, mean, var = (np.asarray(consts[p], np.float64) for p in params)
        k = scale / np.sqrt(var + float(n.attrs.get("epsilon", 1e-5)))
        w = np.asarray(consts[conv.inputs[1]], np.float64)
        b0 = (
            np.asarray(consts[conv.inputs[2]], np.float64)
            if len(conv.inputs) > 2 and conv.inputs[2]
            else np.zeros(w.shape[0])
        )
        wname, bname = f"{conv.outputs[0]}__bnfold_w", f"{conv.outputs[0]}__bnfold_b"
        consts[wname] = (w * k.reshape(-1, *([1] * (w.ndim - 1)))).astype(np.float32)
        consts[bname] = ((b0 - mean) * k + beta).astype(np.float32)
        replaced[conv.outputs[0]] = Node("Conv", conv.name, (conv.inputs[0], wname, bname), (n.outputs[0],), conv.attrs)
        dropped.add(idx)
    out: list[Node] = []
    for idx, n in enumerate(nodes):
        if idx in dropped:
            continue
        out.append(replaced.get(n.outputs[0], n) if n.op == "Conv" and n.outputs else n)
    return out, consts


def _rename_image(fg: ForwardGraph, new: str) -> ForwardGraph:
    old = fg.image
    nodes = [
        dataclasses.replace(n, inputs=tuple(new if i == old else i for i in n.inputs), attrs=n.attrs)
        for n in fg.nodes
    ]
    shapes = dict(fg.shapes)
    if old in shapes:
        shapes[new] = shapes.pop(old)
    dtypes = dict(fg.dtypes)
    if old in dtypes:
        dtypes[new] = dtypes.pop(old)
    return dataclasses.replace(fg, image=new, nodes=nodes, shapes=shapes, dtypes=dtypes)


def _check_params(method: str, epsilon: float, alpha: float, beta: float) -> None:
    if method not in METHODS:
        raise ModelError(f"unknown attribution method {method!r}", hint=f"use one of {', '.join(METHODS)}")
    if not (np.isfinite(epsilon) and epsilon > 0):
        raise ModelError(f"LRP epsilon must be a positive number, got {epsilon!r}", hint="try 1e-6 .. 0.25")
    if method == "lrp-ab" and (alpha < 0 or beta < 0 or abs(alpha - beta - 1.0) > 1e-9):
        raise ModelError(
            f"LRP alpha-beta needs alpha - beta = 1 and both >= 0, got alpha={alpha}, beta={beta}",
            hint="use alpha=1, beta=0 (z+) or alpha=2, beta=1",
        )


def compile_attribution(
    fg: ForwardGraph,
    method: str = "gradient",
    *,
    epsilon: float = 1e-6,
    alpha: float = 1.0,
    beta: float = 0.0,
    lowering: Lowering | None = None,
    patterns: Patterns | None = None,
) -> tuple[Any, AttributionInfo]:
    """Build the attribution ModelProto of ``method`` for the classifier ``fg`` (see the module
    docstring for the graph's inputs, outputs, formulas and errors).

    ``epsilon`` is the LRP stabiliser (both LRP methods and the proportional ops; zennit's
    default 1e-6); ``alpha``/``beta`` the alpha-beta rule's weights (``lrp-ab`` only).
    ``lowering`` picks backward lowerings as in the dream compiler (``relu_pool`` is always
    off here: the class seed is not zero where a Relu is). ``patterns`` (``pattern`` only, and
    required there) are :func:`fit_patterns`' result for this very model (SHA-256 checked).
    """
    import onnx
    from onnx import helper, numpy_helper

    from dreamstate.models.classify import batch_free, classifier_classes

    _check_params(method, epsilon, alpha, beta)
    if method == "pattern":
        if patterns is None:
            raise ModelError("the pattern method needs fitted patterns", hint="fit_patterns(fg, images) first")
        if patterns.sha256 != fg.sha256:
            raise ModelError("these patterns were fitted for another model (SHA-256 differs)",
                             hint="fit them again for this model")
    fg = batch_free(fg)
    if fg.image in _PUBLIC or fg.image in _OUTPUTS:
        fg = _rename_image(fg, f"{fg.image}__model")
    logits = fg.resolve_layer("logits")
    classes = classifier_classes(fg, model=fg.source)
    lrp = method.startswith("lrp")
    lowering = dataclasses.replace(lowering or Lowering(), relu_pool=False)
    fwd = needed_nodes(fg, [logits])
    if lowering.fold_pads:
        fwd = fold_pads(fwd, fg.consts, keep={logits, *fg.outputs})
    if lrp:
        fwd, consts = fold_batchnorm(fwd, fg.consts)
        fg = dataclasses.replace(fg, consts=consts)
    diff = _differentiable(fwd, fg)
    supported = LRP_OPS if lrp else backward.SUPPORTED_OPS
    what = "LRP rule in the attribution compiler" if lrp else "backward rule in the dream compiler"
    for n in fwd:
        if n.op in backward.NO_GRADIENT:
            continue
        if any(i in diff for i in n.inputs if i) and n.op not in supported:
            raise ModelError(
                f"op {n.op} (node {n.name or n.outputs[0]!r}) on the path from the image to the logits has no {what}",
                hint=f"use a model with supported ops only: {', '.join(sorted(supported))}",
            )
        if lrp and n.op == "BatchNormalization" and any(i in diff for i in n.inputs if i):
            raise ModelError(
                f"BatchNormalization node {n.name or n.outputs[0]!r} does not follow a Conv that only it reads, so "
                "LRP cannot fold it",
                hint="LRP folds BatchNormalization into the preceding Conv; re-export the model with BN folded",
            )

    em = Emitter(fg)
    for name in (*_PUBLIC, *_OUTPUTS):
        if name in em._used:
            raise ModelError(f"the model has a tensor named {name!r}, which the attribution graph needs",
                             hint="rename that tensor in the model")
        em._used.add(name)
    ctx = forward_context(em, fwd, lowering=lowering, diff=diff, seeded={fg.image, logits})

    c = fg.image_channels
    f32 = onnx.TensorProto.FLOAT
    inputs = [
        helper.make_tensor_value_info("image", f32, ["N", c or "C", "H", "W"]),
        helper.make_tensor_value_info("target", f32, ["N", classes]),
    ]
    i64 = np.int64
    # --- the batch the forward pass runs on, and each row's seed weight
    weights: str | None = None  # (B,) seed weight per batch row, None = 1
    if method == "smoothgrad":
        inputs.append(helper.make_tensor_value_info("noise", f32, ["S", c or "C", "H", "W"]))
        x1 = em.op("Unsqueeze", ["image", em.const([1], i64)])
        noisy = em.op("Add", [x1, em.op("Unsqueeze", ["noise", em.const([0], i64)])], hint="sg_noisy")
        batch5 = em.op("Concat", [noisy, x1], axis=1, hint="sg_batch")  # (N, S+1, C, H, W)
        s_count = em.op("Slice", [em.shape("noise"), em.const([0], i64), em.const([1], i64)])
        per = em.op("Reciprocal", [em.op("Cast", [s_count], to=1)])
        weights = em.op("Concat", [em.op("Expand", [per, s_count]), em.const([0.0])], axis=0, hint="sg_w")
    elif method == "ig":
        inputs.append(helper.make_tensor_value_info("baseline", f32, ["N", c or "C", "H", "W"]))
        inputs.append(helper.make_tensor_value_info("alphas", f32, ["S"]))
        delta = em.op("Sub", ["image", "baseline"], hint="ig_delta")
        a_all = em.op("Concat", ["alphas", em.const([1.0, 0.0])], axis=0)  # path, then x and x'
        a5 = em.op("Reshape", [a_all, em.const([1, -1, 1, 1, 1], i64)])
        path = em.op("Mul", [a5, em.op("Unsqueeze", [delta, em.const([1], i64)])])
        batch5 = em.op("Add", [em.op("Unsqueeze", ["baseline", em.const([1], i64)]), path], hint="ig_batch")
        s_count = em.op("Slice", [em.shape("alphas"), em.const([0], i64), em.const([1], i64)])
        per = em.op("Reciprocal", [em.op("Cast", [s_count], to=1)])
        weights = em.op("Concat", [em.op("Expand", [per, s_count]), em.const([0.0, 0.0])], axis=0, hint="ig_w")
    if weights is not None:
        flat = em.op("Concat", [em.const([-1], i64), em.tail_shape("image", 1)], axis=0)
        em.raw("Reshape", [batch5, flat], [fg.image])
    else:
        em.raw("Identity", ["image"], [fg.image])

    # --- forward pass
    emit_forward(ctx, fg, fwd)

    # --- seed at the logits: target weights per row (times the logits for LRP)
    lg2 = em.op("Reshape", [logits, em.const([0, classes], i64)], hint="logits2")  # (B, K)
    if weights is not None:
        extra = 2 if method == "ig" else 1
        rows_per = em.op("Add", [s_count, em.const([extra], i64)])
        lshape = em.op("Concat", [em.const([-1], i64), rows_per, em.const([classes], i64)], axis=0)
        lgr = em.op("Reshape", [lg2, lshape])  # (N, S + extra, K)
        at_x = em.op("Squeeze", [s_count, em.const([0], i64)])  # row S of each image: x itself
        clean = em.op("Gather", [lgr, at_x], axis=1)  # (N, K)
        em.raw("Identity", [clean], ["all_scores"])
        em.raw("ReduceSum", [em.op("Mul", [clean, "target"]), em.const([1], i64)], ["score"], keepdims=0)
        if method == "ig":
            base = em.op("Gather", [lgr, em.op("Add", [at_x, em.const(1, i64)])], axis=1)  # row S+1: x'
            em.raw("ReduceSum", [em.op("Mul", [base, "target"]), em.const([1], i64)], ["baseline_score"], keepdims=0)
        t3 = em.op("Unsqueeze", ["target", em.const([1], i64)])  # (N, 1, K)
        w3 = em.op("Reshape", [weights, em.const([1, -1, 1], i64)])  # (1, S+extra, 1)
        seed2 = em.op("Reshape", [em.op("Mul", [t3, w3]), em.const([-1, classes], i64)], hint="seed_rows")
    else:
        seed2 = "target"
        em.raw("Identity", [lg2], ["all_scores"])
        em.raw("ReduceSum", [em.op("Mul", [lg2, "target"]), em.const([1], i64)], ["score"], keepdims=0)
    if lrp or method == "pattern":
        seed2 = em.op("Mul", [seed2, lg2], hint="relevance_out")
    seed = em.op("Reshape", [seed2, em.shape(logits)], hint="seed")

    # --- backward (gradient) or relevance pass
    grads: dict[str, list[str]] = {logits: [seed]}
    absorbed: list[str] = []
    lr = _Lrp(ctx, method=method, epsilon=epsilon, alpha=alpha, beta=beta, absorbed=absorbed,
                                pre=_preprocessing(fwd, fg)) if lrp else None
    for n in reversed(fwd):
        gouts = [take_grad(em, grads, o) for o in n.outputs]
        if all(g is None for g in gouts) or n.op in backward.NO_GRADIENT:
            continue
        if lr is not None:
            gins = lr.rule(n, gouts)
        elif patterns is not None and method == "pattern" and n.op in ("Conv", "Gemm", "MatMul"):
            gins = backward.RULES[n.op].backward(ctx, _with_pattern(em, n, patterns), gouts)
        else:
            gins = backward.RULES[n.op].backward(ctx, n, gouts)
        for i, gi in zip(n.inputs, gins, strict=False):
            if gi is not None and i in diff:
                grads.setdefault(i, []).append(gi)
    g_img = take_grad(em, grads, fg.image)
    if g_img is None:
        raise ModelError(f"the logits of {fg.source} do not depend on the image", hint="check the model")
    if weights is not None:
        five = em.op("Concat", [em.op("Slice", [em.shape("target"), em.const([0], i64), em.const([1], i64)]),
                                em.const([-1], i64), em.tail_shape("image", 1)], axis=0)
        g_img = em.op("ReduceSum", [em.op("Reshape", [g_img, five]), em.const([1], i64)], keepdims=0, hint="g_mean")
    if method == "gxi":
        g_img = em.op("Mul", [g_img, "image"], hint="gxi")
    elif method == "ig":
        g_img = em.op("Mul", [g_img, delta], hint="ig")
    em.raw("Identity", [g_img], ["attribution"])

    outputs = [
        helper.make_tensor_value_info("attribution", f32, ["N", c or "C", "H", "W"]),
        helper.make_tensor_value_info("score", f32, ["N"]),
        helper.make_tensor_value_info("all_scores", f32, ["N", classes]),
    ]
    if method == "ig":
        outputs.append(helper.make_tensor_value_info("baseline_score", f32, ["N"]))
    if lrp:
        if absorbed:
            em.raw("Sum", absorbed, ["absorbed"]) if len(absorbed) > 1 else em.raw("Identity", absorbed, ["absorbed"])
        else:
            em.raw("Mul", ["score", em.const(0.0)], ["absorbed"])
        outputs.append(helper.make_tensor_value_info("absorbed", f32, ["N"]))
    inits = [numpy_helper.from_array(v, k) for k, v in em.inits.items()]
    graph = helper.make_graph(em.nodes, f"attribution_{method}", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION,
                              producer_name="dreamstate", producer_version=EXPLAIN_VERSION)
    helper.set_model_props(model, {"dreamstate.attribution": method, "dreamstate.source_sha256": fg.sha256,
                                   "dreamstate.explain": EXPLAIN_VERSION})
    try:
        onnx.checker.check_model(model, full_check=False)
    except Exception as exc:  # checker errors are ValidationError; report them as compiler bugs
        raise ModelError(f"compiled attribution graph failed the ONNX checker: {exc}",
                         hint="report this model") from exc
    log.info("attribution compiled", extra={"model": fg.source, "method": method, "nodes": len(em.nodes)})
    return model, AttributionInfo(method, classes, c, logits, epsilon, alpha, beta)


def _with_pattern(em: Emitter, n: Node, patterns: Patterns) -> Node:
    """``n`` with its weight input replaced by the fitted ``W * A`` (a new constant): the
    backward of PatternAttribution; the forward keeps the model's own weights."""
    pw = patterns.weights.get(n.inputs[1])
    if pw is None:
        raise ModelError(f"pattern: no fitted pattern for {n.op} node {n.name or n.outputs[0]!r}",
                         hint="fit the patterns again for this model")
    name = em.const(pw, hint="pattern_w")
    em.fg.consts[name] = pw  # the backward rules read weights from the graph's constants
    return Node(n.op, n.name, (n.inputs[0], name, *n.inputs[2:]), n.outputs, n.attrs)


def _differentiable(fwd: Sequence[Node], fg: ForwardGraph) -> set[str]:
    diff = {fg.image}
    for n in fwd:
        if n.op in backward.NO_GRADIENT:
            continue
        if any(i in diff for i in n.inputs if i):
            diff.update(o for o in n.outputs if o and fg.dtypes.get(o, 1) in (1, 10, 11, 16, 0))
    return diff


def _preprocessing(fwd: Sequence[Node], fg: ForwardGraph) -> set[str]:
    """Outputs of elementwise ops with a constant operand reached from the image through such
    ops only: the model's input normalisation (relevance passes them unchanged)."""
    pre = {fg.image}
    for n in fwd:
        if n.op in _LRP_ELEMENTWISE and len(n.inputs) == 2:
            a, b = n.inputs
            if (a in pre and b in fg.consts) or (b in pre and a in fg.consts and n.op in ("Add", "Mul")):
                pre.add(n.outputs[0])
    return pre


class _Lrp:
    """The LRP relevance rules (module docstring); ``rule(node, relevance_out) -> relevance_in``."""

    def __init__(self, ctx: Context, *, method: str, epsilon: float, alpha: float, beta: float,
                 absorbed: list[str], pre: set[str]) -> None:
        self.ctx, self.em = ctx, ctx.em
        self.ab = method == "lrp-ab"
        self.eps, self.alpha, self.beta = epsilon, alpha, beta
        self.absorbed = absorbed
        self.pre = pre

    # ------------------------------------------------------------------ helpers
    def _stab(self, z: str) -> tuple[str, str]:
        """(z + eps * sign(z), eps * sign(z)) with sign(0) = +1, as zennit's stabilizer."""
        em = self.em
        pos = em.op("Cast", [em.op("GreaterOrEqual", [z, em.const(0.0)])], to=1)
        e = em.op("Mul", [em.op("Sub", [em.op("Mul", [pos, em.const(2.0)]), em.const(1.0)]), em.const(self.eps)])
        return str(em.op("Add", [z, e], hint="stab")), str(e)

    def _absorb(self, t: str, sign: float = 1.0) -> None:
        em = self.em
        flat = em.op("Reshape", [t, em.const([0, -1], np.int64)])
        total = em.op("ReduceSum", [flat, em.const([1], np.int64)], keepdims=0, hint="absorbed")
        self.absorbed.append(total if sign == 1.0 else em.op("Mul", [total, em.const(sign)]))

    def _grad(self, n: Node, g: str) -> list[Grad]:
        return backward.RULES[n.op].backward(self.ctx, n, [g] + [None] * (len(n.outputs) - 1))

    def rule(self, n: Node, g: list[Grad]) -> list[Grad]:
        r = g[0]
        if n.op in _LRP_MOVE:
            return self._grad(n, r) if r is not None else backward.RULES[n.op].backward(self.ctx, n, g)
        assert r is not None
        if n.op in _LRP_PASS:
            return [r] + [None] * (len(n.inputs) - 1)
        if n.op in _LRP_LINEAR:
            return self._alpha_beta(n, r) if self.ab else self._epsilon(n, r)
        if n.op in _LRP_PROPORTIONAL:
            stab, e = self._stab(n.outputs[0])
            s = self.em.op("Div", [r, stab], hint="lrp_s")
            self._absorb(self.em.op("Mul", [s, e]))
            (c,) = self._grad(n, s)[:1]
            assert c is not None
            return [self.em.op("Mul", [n.inputs[0], c], hint="lrp_pool")]
        return self._elementwise(n, r)

    # ------------------------------------------------------------------ linear layers
    def _weights(self, n: Node) -> tuple[str, np.ndarray, np.ndarray | None]:
        """(activation input, effective weight in the op's layout, bias broadcastable to z)."""
        consts = self.em.fg.consts
        x, w = n.inputs[0], n.inputs[1]
        if w not in consts or x in consts:
            raise ModelError(
                f"{n.op} node {n.name or n.outputs[0]!r}: LRP needs the image-dependent operand first and "
                "constant weights second",
                hint="re-export the model with constant weights as the second input",
            )
        wv = np.asarray(consts[w], np.float32)
        bias = n.inputs[2] if len(n.inputs) > 2 and n.inputs[2] else None
        if bias is not None and bias not in consts:
            raise ModelError(f"{n.op} node {n.name!r}: the bias depends on the image", hint="use constant biases")
        bv = np.asarray(consts[bias], np.float32) if bias is not None else None
        if n.op == "Conv":
            if bv is not None:
                bv = bv.reshape(1, -1, *([1] * (wv.ndim - 2)))
        elif n.op == "Gemm":
            wv = wv * np.float32(n.attrs.get("alpha", 1.0))
            if bv is not None:
                bv = bv * np.float32(n.attrs.get("beta", 1.0))
        return x, wv, bv

    def _epsilon(self, n: Node, r: str) -> list[Grad]:
        em = self.em
        x, _, bv = self._weights(n)
        stab, e = self._stab(n.outputs[0])
        s = em.op("Div", [r, stab], hint="lrp_s")
        self._absorb(em.op("Mul", [s, e if bv is None else em.op("Add", [e, em.const(bv, hint="bias")])]))
        c = self._grad(n, s)[0]
        assert c is not None
        return [em.op("Mul", [x, c], hint="lrp_eps")] + [None] * (len(n.inputs) - 1)

    def _variant(self, n: Node, w: np.ndarray, b: np.ndarray | None, tag: str) -> Node:
        consts = self.em.fg.consts
        wname = self.em.fresh(f"{n.outputs[0]}_{tag}w")
        consts[wname] = np.ascontiguousarray(w, np.float32)
        ins = [n.inputs[0], wname]
        if b is not None:
            bname = self.em.fresh(f"{n.outputs[0]}_{tag}b")
            flat = b.reshape(-1) if n.op == "Conv" else b
            consts[bname] = np.ascontiguousarray(flat, np.float32)
            ins.append(bname)
        attrs = dict(n.attrs)
        if n.op == "Gemm":
            attrs["alpha"], attrs["beta"] = 1.0, 1.0
        return Node(n.op, n.name, tuple(ins), n.outputs, attrs)

    def _fwd(self, v: Node, x: str) -> str:
        em = self.em
        for i in v.inputs[1:]:
            em.use_const(i)
        return str(em.op(v.op, [x, *v.inputs[1:]], hint="lrp_z", **v.attrs))

    def _alpha_beta(self, n: Node, r: str) -> list[Grad]:
        em = self.em
        x, wv, bv = self._weights(n)
        wp, wn = np.maximum(wv, 0), np.minimum(wv, 0)
        bp = None if bv is None else np.maximum(bv, 0)
        bn = None if bv is None else np.minimum(bv, 0)
        xp = em.op("Relu", [x], hint="xpos")
        xn = em.op("Min", [x, em.const(0.0)], hint="xneg")

        def part(w_on_pos: np.ndarray, b: np.ndarray | None, w_on_neg: np.ndarray, tag: str) -> tuple[str, str]:
            v1 = self._variant(n, w_on_pos, b, tag + "1")
            v2 = self._variant(n, w_on_neg, None, tag + "2")
            z = em.op("Add", [self._fwd(v1, xp), self._fwd(v2, xn)], hint=f"z{tag}")
            stab, e = self._stab(z)
            s = em.op("Div", [r, stab], hint=f"lrp_s{tag}")
            absorb = e if b is None else em.op("Add", [e, em.const(b, hint="bias")])
            c1, c2 = self._grad(v1, s)[0], self._grad(v2, s)[0]
            assert c1 is not None and c2 is not None
            rin = em.op("Add", [em.op("Mul", [xp, c1]), em.op("Mul", [xn, c2])], hint=f"lrp_r{tag}")
            return rin, em.op("Mul", [s, absorb])

        rp, ap = part(wp, bp, wn, "p")
        out, absorbed = rp, ap
        if self.alpha != 1.0:
            out = em.op("Mul", [rp, em.const(self.alpha)])
            absorbed = em.op("Mul", [ap, em.const(self.alpha)])
        self._absorb(absorbed)
        if self.beta:
            rn, an = part(wn, bn, wp, "n")
            out = em.op("Sub", [out, em.op("Mul", [rn, em.const(self.beta)])], hint="lrp_ab")
            self._absorb(an, -self.beta)
        return [out] + [None] * (len(n.inputs) - 1)

    # ------------------------------------------------------------------ elementwise
    def _elementwise(self, n: Node, r: str) -> list[Grad]:
        em = self.em
        a, b = n.inputs[0], n.inputs[1]
        y = n.outputs[0]
        da, db = (backward._diff(self.ctx, t) for t in (a, b))
        if y in self.pre or n.op in ("Mul", "Div"):
            if da and db:
                raise ModelError(
                    f"{n.op} node {n.name or y!r} multiplies two image-dependent tensors; LRP has no rule for it",
                    hint="explain this model with gradient, gxi, smoothgrad or ig",
                )
            inp = a if da else b
            return [backward._unbroadcast(self.ctx, r, inp, y) if t == inp else None for t in (a, b)]
        stab, e = self._stab(y)
        s = em.op("Div", [r, stab], hint="lrp_s")
        absorb = e
        out: list[Grad] = []
        for k, (t, dt) in enumerate(((a, da), (b, db))):
            sign = -1.0 if (n.op == "Sub" and k == 1) else 1.0
            contrib = t if sign == 1.0 else em.op("Neg", [t])
            if dt:
                out.append(backward._unbroadcast(self.ctx, em.op("Mul", [contrib, s]), t, y))
            else:
                absorb = em.op("Add", [absorb, contrib])
                out.append(None)
        self._absorb(em.op("Mul", [s, absorb]))
        return out

@dataclass(frozen=True)
class Explanation:
    """One image's attribution.

    - ``attribution`` (C, H, W) float32 in model-input units times score units (LRP, gxi, ig:
      relevance per input value, summing to about ``score``; gradient, smoothgrad: d score per
      model-input unit);
    - ``heat`` (H, W) float32: the per-pixel map; the channel sum for gxi, ig and LRP (signed),
      the channel maximum of ``|attribution|`` for gradient and smoothgrad (Simonyan et al. 2014;
      Smilkov et al. 2017), >= 0;
    - ``index``, ``label``, ``score``: the explained class and its logit at the image;
    - ``reference``: ``f(baseline)`` for ig, else None; ``absorbed``: LRP's relevance taken by
      biases and stabilisers, else None;
    - ``ms``: wall time of the onnxruntime call in milliseconds.
    """

    method: str
    attribution: np.ndarray
    heat: np.ndarray
    index: int
    label: str
    score: float
    reference: float | None
    absorbed: float | None
    ms: float

    @property
    def completeness_error(self) -> float | None:
        """IG: ``|sum(attribution) - (f(x) - f(x'))| / |f(x) - f(x')|`` (0 = complete); LRP:
        ``|sum(attribution) + absorbed - score| / |score|`` (conservation); else None."""
        total = float(np.sum(self.attribution, dtype=np.float64))
        if self.reference is not None:
            want = self.score - self.reference
            return abs(total - want) / max(abs(want), 1e-12)
        if self.absorbed is not None:
            return abs(total + self.absorbed - self.score) / max(abs(self.score), 1e-12)
        return None


class Explainer:
    """A compiled attribution graph of one classifier and method in an onnxruntime session.

    ``Explainer.load(model, method)`` resolves the model (registry name or .onnx path), compiles
    and opens it; :meth:`explain` maps an RGB image in [0, 1] of any size the model accepts.
    ``samples`` is SmoothGrad's copies (S) or IG's path steps; ``sigma`` SmoothGrad's noise
    standard deviation as a fraction of the model's input range (Smilkov et al. 2017 use 0.1 to
    0.2); IG's baseline is a black image. One thread at a time per instance.
    """

    def __init__(self, *, classifier: Any, session: Any, info: AttributionInfo, samples: int, sigma: float,
                 seed: int) -> None:
        self.classifier = classifier
        self.info = info
        self.method = info.method
        self.samples = samples
        self.sigma = sigma
        self._session = session
        self._rng = np.random.default_rng(seed)
        pre = classifier.spec.preprocess
        std = np.asarray(pre.std[: info.channels or 3], np.float32)
        if pre.bgr:
            std = std[::-1]
        self._noise_scale = (np.float32(pre.scale) / std).reshape(-1, 1, 1).astype(np.float32)

    @classmethod
    def load(cls, model: str | Any, method: str = "gradient", *, device: Literal["auto", "cpu", "cuda"] = "cpu",
             threads: int | None = None,
             samples: int = 16, sigma: float = 0.15, epsilon: float = 1e-6, alpha: float = 1.0, beta: float = 0.0,
             seed: int = 0, patterns: Patterns | None = None) -> Explainer:
        """Compile ``method`` for ``model`` and open its session (``ModelError`` as
        :func:`compile_attribution` and :meth:`ClassifierModel.load`; also for samples < 1 or a
        negative sigma). ``pattern`` uses ``patterns``, or fits them on :func:`sample_images`
        (about 5 s for SqueezeNet) when None."""
        from dreamstate.models.classify import ClassifierModel
        from dreamstate.models.graph import load_forward
        from dreamstate.models.session import make_session

        if samples < 1:
            raise ModelError(f"samples must be at least 1, got {samples}", hint="SmoothGrad: 16..50; IG: 32..64")
        if not (np.isfinite(sigma) and sigma >= 0):
            raise ModelError(f"sigma must be >= 0, got {sigma}", hint="0.1 .. 0.2 of the input range")
        clf = ClassifierModel.load(model, device="cpu", threads=threads)
        from dreamstate.models import registry

        path, _ = registry.resolve(model)
        fg = load_forward(path, label=str(path))
        if method == "pattern" and patterns is None:
            patterns = fit_patterns_on(clf, fg, sample_images())
        proto, info = compile_attribution(fg, method, epsilon=epsilon, alpha=alpha, beta=beta, patterns=patterns)
        session, _ = make_session(proto.SerializeToString(), device=device, threads=threads,
                                  what=f"{clf.name} {method} attribution")
        return cls(classifier=clf, session=session, info=info, samples=samples, sigma=sigma, seed=seed)

    @property
    def size(self) -> int:
        """The square working size in pixels the model was trained at (224 for ImageNet models)."""
        return int(self.classifier.size)

    def explain(self, rgb: np.ndarray, target: str | int | None = None) -> Explanation:
        """Explain one (H, W, 3) RGB image in [0, 1] for ``target`` (a class name or index; the
        top class when None). Raises ``ModelError`` for an unknown class or a bad image shape."""
        import time

        img = np.asarray(rgb, np.float32)
        if img.ndim != 3 or img.shape[2] != 3:
            raise ModelError(f"expected one (H, W, 3) RGB image, got shape {img.shape}", hint="pass one RGB image")
        x = self.classifier.to_model_space(img[None])
        if target is None:
            index = int(np.argmax(self.classifier.logits(img[None])[0]))
        else:
            index = self.classifier.resolve(target)
        onehot = np.zeros((1, self.info.classes), np.float32)
        onehot[0, index] = 1.0
        feeds: dict[str, np.ndarray] = {"image": x, "target": onehot}
        s = self.samples
        if self.method == "smoothgrad":
            noise = self._rng.standard_normal((s, *x.shape[1:])).astype(np.float32)
            feeds["noise"] = noise * (np.float32(self.sigma) * self._noise_scale)
        elif self.method == "ig":
            feeds["baseline"] = self.classifier.to_model_space(np.zeros_like(img)[None])
            feeds["alphas"] = ((np.arange(s, dtype=np.float32) + 0.5) / s).astype(np.float32)
        t0 = time.perf_counter()
        outs = dict(zip([o.name for o in self._session.get_outputs()], self._session.run(None, feeds), strict=True))
        ms = (time.perf_counter() - t0) * 1000.0
        attr = np.asarray(outs["attribution"][0], np.float32)
        heat = np.abs(attr).max(axis=0) if self.method in ("gradient", "smoothgrad") else attr.sum(axis=0)
        return Explanation(
            method=self.method,
            attribution=attr,
            heat=heat.astype(np.float32),
            index=index,
            label=self.classifier.label(index),
            score=float(outs["score"][0]),
            reference=float(outs["baseline_score"][0]) if "baseline_score" in outs else None,
            absorbed=float(outs["absorbed"][0]) if "absorbed" in outs else None,
            ms=ms,
        )


SIGNED_METHODS = frozenset({"gxi", "ig", "lrp-eps", "lrp-ab", "pattern"})
COLORMAPS: tuple[str, ...] = ("auto", "seismic", "jet", "inferno", "viridis", "hot")


def heat_colors(heat: np.ndarray, *, signed: bool, colormap: str = "auto", smooth_px: float = 0.0,
                percentile: float = 99.5) -> tuple[np.ndarray, np.ndarray]:
    """Colour a (H, W) heat map: returns ``(rgb, alpha)``, (H, W, 3) and (H, W) float32 in [0, 1].

    The map is Gaussian-blurred by ``smooth_px`` (sigma in pixels, 0 = off), then scaled by the
    ``percentile`` of ``|heat|`` (so a few extreme pixels do not wash it out) and clipped to
    [-1, 1] (signed) or [0, 1]. ``colormap`` ``auto`` is ``seismic`` (blue - white - red; red =
    for the class, blue = against) for signed maps and ``inferno`` otherwise; ``alpha`` is the
    scaled magnitude, so weak evidence stays transparent in :func:`overlay`. Raises
    ``ModelError`` for an unknown colour map or a map that is not 2-D.
    """
    import cv2

    h = np.asarray(heat, np.float32)
    if h.ndim != 2:
        raise ModelError(f"a heat map is 2-D (H, W), got shape {h.shape}", hint="sum the channels first")
    if colormap not in COLORMAPS:
        raise ModelError(f"unknown colour map {colormap!r}", hint=f"use one of {', '.join(COLORMAPS)}")
    if smooth_px > 0:
        h = np.asarray(cv2.GaussianBlur(h, (0, 0), float(smooth_px)), np.float32)
    top = float(np.percentile(np.abs(h), percentile)) if h.size else 0.0
    v = h / top if top > 0 else np.zeros_like(h)
    v = np.clip(v, -1.0, 1.0) if signed else np.clip(np.abs(v), 0.0, 1.0)
    name = ("seismic" if signed else "inferno") if colormap == "auto" else colormap
    if name == "seismic":
        r = np.where(v > 0, 1.0, 1.0 + v)
        b = np.where(v < 0, 1.0, 1.0 - v)
        g = 1.0 - np.abs(v)
        rgb: np.ndarray = np.stack([r, g, b], axis=-1).astype(np.float32)
    else:
        cv_maps = {"jet": cv2.COLORMAP_JET, "inferno": cv2.COLORMAP_INFERNO, "viridis": cv2.COLORMAP_VIRIDIS,
                   "hot": cv2.COLORMAP_HOT}
        unit = (v + 1.0) / 2.0 if signed else v
        bgr = cv2.applyColorMap(np.round(unit * 255).astype(np.uint8), cv_maps[name])
        rgb = bgr[..., ::-1].astype(np.float32) / 255.0
    return rgb, np.abs(v).astype(np.float32)


def overlay(frame: np.ndarray, heat: np.ndarray, *, signed: bool, opacity: float = 0.6, colormap: str = "auto",
            smooth_px: float = 0.0) -> np.ndarray:
    """Blend a heat map over an RGB frame: (H, W, 3) float in [0, 1] -> the same, float32.

    The heat map is resized to the frame (bilinear) and coloured by :func:`heat_colors`; each
    pixel is ``frame * (1 - a) + colour * a`` with ``a = opacity * |scaled heat|``, ``opacity``
    in [0, 1]. Raises ``ModelError`` for an opacity out of range or a frame that is not RGB.
    """
    import cv2

    f = np.asarray(frame, np.float32)
    if f.ndim != 3 or f.shape[2] != 3:
        raise ModelError(f"expected an (H, W, 3) RGB frame, got shape {f.shape}", hint="pass an RGB frame")
    if not 0.0 <= opacity <= 1.0:
        raise ModelError(f"opacity must be in [0, 1], got {opacity}", hint="0.5 .. 0.7 reads well")
    h = np.asarray(heat, np.float32)
    if h.shape[:2] != f.shape[:2]:
        h = np.asarray(cv2.resize(h, (f.shape[1], f.shape[0]), interpolation=cv2.INTER_LINEAR), np.float32)
    rgb, a = heat_colors(h, signed=signed, colormap=colormap, smooth_px=smooth_px)
    a = (a * np.float32(opacity))[..., None]
    out: np.ndarray = (f * (1.0 - a) + rgb * a).astype(np.float32)
    return out


# ---------------------------------------------------------------------------- PatternAttribution
@dataclass(frozen=True)
class Patterns:
    """PatternAttribution's signal patterns (Kindermans et al. 2018, "Learning how to explain
    neural networks: PatternNet and PatternAttribution"): for each Conv and Gemm weight tensor
    (by its name in the model), ``W * A`` in the weight's own layout, where ``A`` holds one
    pattern per output channel. ``kinds`` says which estimator made each one (``relu``: the
    two-component estimator S_a+- over the samples where the layer's output is positive, used
    when only a Relu reads the layer; ``linear``: S_a over all samples); ``sha256`` is the model's.
    """

    sha256: str
    weights: dict[str, np.ndarray]
    kinds: dict[str, str]
    images: int

    def save(self, path: str | Any) -> None:
        """Write an ``.npz`` (no pickle: names and kinds as unicode arrays)."""
        names = sorted(self.weights)
        arrays: dict[str, Any] = {f"p{i}": self.weights[n] for i, n in enumerate(names)}
        arrays.update(names=np.asarray(names, dtype=str), kinds=np.asarray([self.kinds[n] for n in names], dtype=str),
                      sha256=np.asarray(self.sha256, dtype=str), images=np.asarray(self.images))
        np.savez(path, **arrays)

    @classmethod
    def load(cls, path: str | Any) -> Patterns:
        """Read an ``.npz`` written by :meth:`save` (``allow_pickle=False``); ``ModelError`` when
        it is not one."""
        try:
            with np.load(path, allow_pickle=False) as z:
                names = [str(n) for n in z["names"]]
                kinds = [str(k) for k in z["kinds"]]
                weights = {n: np.asarray(z[f"p{i}"], np.float32) for i, n in enumerate(names)}
                return cls(str(z["sha256"]), weights, dict(zip(names, kinds, strict=True)), int(z["images"]))
        except (OSError, KeyError, ValueError) as exc:
            raise ModelError(f"cannot read patterns from {path}: {exc}",
                             hint="fit them again: dreamstate explain --method pattern --patterns FILE.npz") from exc


def _conv_patches(x: np.ndarray, n: Node, w: np.ndarray) -> np.ndarray:
    """im2col: (N, C, H, W) -> (N * Ho * Wo, C * kh * kw) in the weight's (C, kh, kw) order."""
    from numpy.lib.stride_tricks import sliding_window_view

    kh, kw = w.shape[2:]
    s = [int(v) for v in n.attrs.get("strides", [1, 1])]
    d = [int(v) for v in n.attrs.get("dilations", [1, 1])]
    auto = str(n.attrs.get("auto_pad", "NOTSET") or "NOTSET")
    if auto not in ("NOTSET", "VALID"):
        raise ModelError(f"pattern: Conv node {n.name!r} uses auto_pad {auto}", hint="re-export with explicit pads")
    pt, pl, pb, pr = [int(v) for v in n.attrs.get("pads", [0, 0, 0, 0])] if auto == "NOTSET" else [0, 0, 0, 0]
    xp = np.pad(x, ((0, 0), (0, 0), (pt, pb), (pl, pr)))
    eh, ew = d[0] * (kh - 1) + 1, d[1] * (kw - 1) + 1
    win = sliding_window_view(xp, (eh, ew), axis=(2, 3))[:, :, :: s[0], :: s[1], :: d[0], :: d[1]]
    return np.ascontiguousarray(win.transpose(0, 2, 3, 1, 4, 5)).reshape(-1, x.shape[1] * kh * kw)


def fit_patterns(fg: ForwardGraph, images: Sequence[np.ndarray]) -> Patterns:
    """Fit the patterns of every Conv and Gemm on the path to the logits from model-space images
    (each (1, C, H, W) float32), one forward pass each, statistics accumulated in float64.

    Per layer with weights ``W`` (output channel ``c``, flattened input patch ``x``, output
    ``y = w_c . x``): ``A_c = cov(x, y) / (w_c . cov(x, y))`` (S_a, linear), the covariance taken
    over the samples where ``y + b > 0`` when a Relu alone reads the layer (S_a+-, the positive
    regime; Kindermans et al. 2018, eqs. for S_a and S_a+-, as iNNvestigate computes them). A
    channel that never fires gets a zero pattern. Raises ``ModelError`` for a grouped or SAME
    padded Conv, a Gemm with image-dependent weights, a MatMul on the path (no pattern family
    fitted for it), or no images.
    """
    import onnxruntime as ort

    from dreamstate.models.compiler import forward_features_model

    if not images:
        raise ModelError("pattern: no images to fit the patterns on", hint="give a folder of photos")
    logits = fg.resolve_layer("logits")
    fwd = needed_nodes(fg, [logits])
    diff = _differentiable(fwd, fg)
    readers: dict[str, list[Node]] = {}
    for n in fwd:
        for i in n.inputs:
            readers.setdefault(i, []).append(n)
    layers: list[Node] = []
    for n in fwd:
        if not any(i in diff for i in n.inputs if i):
            continue
        if n.op == "MatMul":
            raise ModelError(f"pattern: MatMul node {n.name or n.outputs[0]!r} has no pattern estimator here",
                             hint="use lrp-ab or gradient for this model; PatternAttribution covers Conv and Gemm")
        if n.op == "Conv":
            if int(n.attrs.get("group", 1)) != 1:
                raise ModelError(f"pattern: Conv node {n.name or n.outputs[0]!r} is grouped (group "
                                 f"{n.attrs.get('group')}); patterns are fitted for plain convolutions only",
                                 hint="use lrp-ab or gradient for models with depthwise convolutions")
            layers.append(n)
        elif n.op == "Gemm":
            if n.inputs[1] not in fg.consts or int(n.attrs.get("transA", 0)):
                raise ModelError(f"pattern: Gemm node {n.name!r} needs constant weights and transA 0",
                                 hint="re-export the model")
            layers.append(n)
    tensors = [t for t in dict.fromkeys(t for n in layers for t in (n.inputs[0], n.outputs[0])) if t != fg.image]
    proto = forward_features_model(fg, tensors)
    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(proto.SerializeToString(), so, providers=["CPUExecutionProvider"])
    stats: dict[str, list[np.ndarray]] = {}
    for img in images:
        x_img = np.asarray(img, np.float32)
        acts = dict(zip(tensors, sess.run(tensors, {fg.image: x_img}), strict=True))
        acts[fg.image] = x_img
        for n in layers:
            w2, b = _flat_weights(fg, n)
            x, z = acts[n.inputs[0]].astype(np.float64), acts[n.outputs[0]].astype(np.float64)
            if n.op == "Conv":
                xs = _conv_patches(x, n, fg.consts[n.inputs[1]])
                zs = z.transpose(0, 2, 3, 1).reshape(-1, z.shape[1])
            else:
                xs, zs = x.reshape(x.shape[0], -1), z.reshape(z.shape[0], -1)
            relu = all(r.op == "Relu" for r in readers.get(n.outputs[0], [])) and bool(readers.get(n.outputs[0]))
            m = (zs > 0).astype(np.float64) if relu else np.ones_like(zs)
            y = zs - b[None, :]
            my = m * y
            part = [m.sum(0), my.sum(0), m.T @ xs, my.T @ xs]
            acc = stats.setdefault(n.outputs[0], [np.zeros_like(p) for p in part])
            for total, p in zip(acc, part, strict=True):
                np.add(total, p, out=total)
    weights: dict[str, np.ndarray] = {}
    kinds: dict[str, str] = {}
    for n in layers:
        w2, _ = _flat_weights(fg, n)
        cnt, sy, sx, sxy = stats[n.outputs[0]]
        safe = np.maximum(cnt, 1.0)[:, None]
        cov = sxy / safe - (sx / safe) * (sy[:, None] / safe)
        wcov = (w2 * cov).sum(1, keepdims=True)
        a = np.where(np.abs(wcov) > 1e-12, cov / np.where(np.abs(wcov) > 1e-12, wcov, 1.0), 0.0)
        a[cnt == 0] = 0.0
        relu = all(r.op == "Relu" for r in readers.get(n.outputs[0], [])) and bool(readers.get(n.outputs[0]))
        kinds[n.inputs[1]] = "relu" if relu else "linear"
        w = np.asarray(fg.consts[n.inputs[1]], np.float64)
        # A in the weight's own layout: Conv (out, C, kh, kw); Gemm's B is (K, D) or (D, K)
        wa = w * a.reshape(w.shape) if n.op == "Conv" else w * (a if int(n.attrs.get("transB", 0)) else a.T)
        weights[n.inputs[1]] = wa.astype(np.float32)
    return Patterns(fg.sha256, weights, kinds, len(images))


def _flat_weights(fg: ForwardGraph, n: Node) -> tuple[np.ndarray, np.ndarray]:
    """(W as (out, in) with Gemm's alpha folded in, bias (out,) zeros when absent)."""
    w = np.asarray(fg.consts[n.inputs[1]], np.float64)
    if n.op == "Conv":
        w2 = w.reshape(w.shape[0], -1)
    else:
        w2 = (w if int(n.attrs.get("transB", 0)) else w.T) * float(n.attrs.get("alpha", 1.0))
    b = np.zeros(w2.shape[0])
    if len(n.inputs) > 2 and n.inputs[2]:
        bias = np.asarray(fg.consts.get(n.inputs[2], np.zeros(1)), np.float64)
        scale = float(n.attrs.get("beta", 1.0)) if n.op == "Gemm" else 1.0
        b = np.broadcast_to(bias.reshape(-1) * scale, (w2.shape[0],)).copy()
    return w2, b


def sample_images() -> list[np.ndarray]:
    """RGB [0, 1] photos that ship with scikit-learn (china, flower) and, when installed,
    scikit-image (astronaut, coffee, chelsea, rocket): the default set to fit patterns on."""
    from sklearn.datasets import load_sample_image

    out = [load_sample_image(n).astype(np.float32) / 255.0 for n in ("china.jpg", "flower.jpg")]
    try:
        import skimage.data as skd
    except ImportError:
        return out
    for name in ("astronaut", "coffee", "chelsea", "rocket"):
        out.append(np.asarray(getattr(skd, name)(), np.float32)[..., :3] / 255.0)
    return out


def fit_patterns_on(classifier: Any, fg: ForwardGraph, images: Sequence[np.ndarray]) -> Patterns:
    """:func:`fit_patterns` on RGB [0, 1] pictures of any size: each resized (area) to the
    classifier's square working size and put in model space with its preprocessing."""
    from dreamstate.engine.core.images import resize

    size = (classifier.size, classifier.size)
    return fit_patterns(fg, [classifier.to_model_space(resize(np.asarray(i, np.float32), size)[None]) for i in images])
