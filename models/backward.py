"""Backward rules: for each forward op, standard-ONNX nodes computing input gradients.

A rule gets the forward :class:`~models.graph.Node` and the gradients of its outputs (``None``
where an output carries no gradient) and returns one gradient name (or ``None``) per input.
Rules only emit opset-18 ops that stock onnxruntime runs on CPU and CUDA. Some rules also
rewrite the forward node (``forward``), e.g. MaxPool also emits its Indices.

Facts the rules rely on (checked with onnxruntime 1.31/1.32):
- Conv -> ConvTranspose with the same weights; for stride > 1 the result is zero-padded back to
  the input's (dynamic) shape with Shape/Sub/Pad (output_padding cannot be dynamic).
- MaxPool Indices are flat over N*C*H*W; ScatterElements(reduction="add") into a flat zero
  tensor is exact for overlapping windows (MaxUnpool overwrites and has no CUDA kernel).
- Elementwise masks use the op's *output* where that is equivalent (Relu: y > 0), so onnxruntime
  can still fuse Conv+Relu in the forward pass.
- A Relu (or Concat of Relus) read only by a MaxPool is masked on the pool's output instead
  (Lowering.relu_pool): 4x fewer elements, bit-identical gradients, ~10% of a SqueezeNet step.
- Measured on onnxruntime 1.32 CPU (2 threads): MaxPool with Indices is single-threaded (~16 ms
  on SqueezeNet's pool1 at 640x360 vs ~1 ms without); every Indices-free 3x3/2 backward tried
  (per-offset masks + one-hot ConvTranspose, ArgMax, separable row/column masks) costs as much
  or more, because Slice/Pad/Concat/Where/ConvTranspose-col2im are single-threaded too.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from dreamstate.engine.core.errors import ModelError
from dreamstate.models.graph import Node

if TYPE_CHECKING:
    from dreamstate.models.compiler import Emitter

Grad = str | None


@dataclass(frozen=True)
class Lowering:
    """How some backward ops are lowered; the defaults were the fastest in `bench dream`.

    - conv_as_conv: stride-1 Conv backward as a Conv with flipped weights (onnxruntime's fast
      NCHWc path) instead of ConvTranspose, when the forward conv has at least
      conv_min_channels input channels (the backward conv's output channels).
    - relu: "cast" = g * Cast(y > 0); "where" = Where(y > 0, g, 0); "sign" = g * Sign(y).
    - maxpool: "indices" = MaxPool Indices + ScatterElements(add); "argmax" = ArgMax over the
      stacked window offsets + one-hot ConvTranspose (no Indices, no scatter); "separable" =
      for 3x3 / 2 windows (SqueezeNet), a row pass then a column pass of 3-way masks and
      interleaves, all multithreaded float ops (falls back to "indices" for other windows).
    - subpixel: strided Conv backward as one stride-1 Conv + DepthToSpace instead of
      ConvTranspose.
    - blocks_pool: non-overlapping k x k / k MaxPool without Indices (onnxruntime's
      MaxPool-with-Indices kernel is single-threaded and ~20x slower than MaxPool), in one of
      three forms (``blocks_form``):
      "first" (default): a first-winner mask built from multithreaded float ops (Resize, Equal,
      a pooled scan rank; :func:`maxpool_blocks_first_backward`), MaxPool's own tie-breaking;
      "argmax": SpaceToDepth + ArgMax (the first maximum) + DepthToSpace, also MaxPool's choice
      but its DepthToSpace and ArgMax run single-threaded (about a third of the starter
      model's step at 640x360);
      "share" (opt-in): the window's winners ``x == nearest-upsampled y`` share its gradient
      equally (``g / count``): the same gradient wherever a window has one maximum, a valid
      subgradient but not MaxPool's choice where several tie (flat image regions).
    - relu_pool: a Relu (or a Concat of Relus) whose only consumer is a MaxPool gets its mask
      on the pool's (smaller) output instead: the pool gradient only reaches pixels equal to
      their window's maximum y, where [x > 0] == [y > 0], so Pool^T(g) * [x > 0] ==
      Pool^T(g * [y > 0]) exactly. A dream-layer seed on x is fine when it is zero wherever x
      is ("layers"/"channels" objectives: seed = x * const), not with a guide or class seed.
    - fold_pads: zero constant Pads read only by Convs become the Convs' own padding
      (:func:`models.graph.fold_pads`, exact) instead of a Pad forward and a Pad backward.
    """

    conv_as_conv: bool = True
    conv_min_channels: int = 1
    relu: str = "cast"
    maxpool: str = "indices"
    blocks_pool: bool = True
    subpixel: bool = False  # measured: no faster than ConvTranspose on onnxruntime 1.32 CPU
    relu_pool: bool = True
    fold_pads: bool = True
    blocks_form: str = "first"

    def key(self) -> str:
        flags = f"c{int(self.conv_as_conv)}.{self.conv_min_channels}b{int(self.blocks_pool)}s{int(self.subpixel)}"
        # "" for argmax: graphs cached before the other forms existed were argmax ones
        flags += {"first": "f", "argmax": "", "share": "m"}.get(self.blocks_form, self.blocks_form)
        flags += f"r{int(self.relu_pool)}p{int(self.fold_pads)}"
        return f"{flags}-{self.relu}-{self.maxpool}"


@dataclass
class Context:
    em: Emitter
    lowering: Lowering = field(default_factory=Lowering)
    diff: set[str] = field(default_factory=set)
    pool_indices: dict[str, str] = field(default_factory=dict)
    # tensor -> the forward node that makes it; tensor -> how many forward nodes read it;
    # tensors with a gradient seed that may be nonzero where the tensor is zero
    producers: dict[str, Node] = field(default_factory=dict)
    readers: dict[str, int] = field(default_factory=dict)
    seeded: set[str] = field(default_factory=set)
    # Relu outputs whose mask a downstream MaxPool backward already applied
    premasked: set[str] = field(default_factory=set)


@dataclass(frozen=True)
class Rule:
    backward: Callable[[Context, Node, list[Grad]], list[Grad]]
    forward: Callable[[Context, Node], None] | None = None


NO_GRADIENT = frozenset({"Shape", "Size"})


def _ints(v: Any, n: int, default: int) -> list[int]:
    return [int(x) for x in v] if v else [default] * n


def _need_const(ctx: Context, name: str, node: Node, what: str) -> np.ndarray:
    if name not in ctx.em.fg.consts:
        raise ModelError(
            f"{node.op} node {node.name or node.outputs[0]!r}: {what} {name!r} depends on the image; "
            "the dream compiler needs it constant",
            hint="use a model whose weights are initializers",
        )
    return ctx.em.fg.consts[name]


def _static_pads(node: Node, k: list[int], s: list[int], d: list[int]) -> list[int] | None:
    """Explicit pads [b..., e...] or None when they depend on the input size (SAME, stride>1)."""
    sp = len(k)
    auto = str(node.attrs.get("auto_pad", "NOTSET") or "NOTSET")
    if auto == "NOTSET":
        return _ints(node.attrs.get("pads"), 2 * sp, 0)
    if auto == "VALID":
        return [0] * (2 * sp)
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        if any(x != 1 for x in s):
            return None
        total = [di * (ki - 1) for ki, di in zip(k, d, strict=True)]
        small = [t // 2 for t in total]
        big = [t - t // 2 for t in total]
        return small + big if auto == "SAME_UPPER" else big + small
    raise ModelError(f"{node.op} node {node.name!r} has unknown auto_pad {auto!r}", hint="re-export the model")


def _same_dynamic_slice(ctx: Context, node: Node, full: str, x: str, sp: int) -> str:
    """Crop a pads=0 transposed result to x's size for SAME padding with stride > 1."""
    em = ctx.em
    auto = str(node.attrs.get("auto_pad"))
    big_len = em.tail_shape(full, 2)
    size = em.tail_shape(x, 2)
    total = em.op("Max", [em.op("Sub", [big_len, size]), em.const([0] * sp, np.int64)])
    half = em.op("Div", [total, em.const([2] * sp, np.int64)])
    begin = half if auto == "SAME_UPPER" else em.op("Sub", [total, half])
    end = em.op("Add", [begin, size])
    crop = em.op("Slice", [full, begin, end, em.const(list(range(2, 2 + sp)), np.int64)])
    return em.pad_end_to(crop, x)


# ---------------------------------------------------------------------------------------- Conv
def conv_backward(ctx: Context, n: Node, g: list[Grad]) -> list[Grad]:
    em = ctx.em
    x, w = n.inputs[0], n.inputs[1]
    wv = _need_const(ctx, w, n, "weight")
    sp = wv.ndim - 2
    k = _ints(n.attrs.get("kernel_shape"), sp, 1) if n.attrs.get("kernel_shape") else list(wv.shape[2:])
    s = _ints(n.attrs.get("strides"), sp, 1)
    d = _ints(n.attrs.get("dilations"), sp, 1)
    group = int(n.attrs.get("group", 1))
    pads = _static_pads(n, k, s, d)
    attrs: dict[str, Any] = {"dilations": d, "group": group, "strides": s, "kernel_shape": k}
    eff = [di * (ki - 1) for ki, di in zip(k, d, strict=True)]
    if (
        ctx.lowering.conv_as_conv
        and wv.shape[1] * group >= ctx.lowering.conv_min_channels
        and pads is not None
        and all(si == 1 for si in s)
        and all(p <= e for p, e in zip(pads, eff + eff, strict=True))
    ):
        # Stride 1: the transposed conv is a plain Conv with flipped, channel-swapped weights and
        # pads eff - p. onnxruntime runs Conv in its fast blocked (NCHWc) path, unlike ConvTranspose.
        cout, cin_g = wv.shape[0], wv.shape[1]
        wt = wv.reshape(group, cout // group, cin_g, *wv.shape[2:]).swapaxes(1, 2)
        wt = wt.reshape(group * cin_g, cout // group, *wv.shape[2:])
        wt = np.ascontiguousarray(np.flip(wt, axis=tuple(range(2, 2 + sp))))
        back = [e - p for e, p in zip(eff + eff, pads, strict=True)]
        dx = em.op("Conv", [g[0], em.const(wt, hint="wflip")], hint="dconv", pads=back, **attrs)
    elif pads is not None and all(si == 1 for si in s):
        dx = em.op("ConvTranspose", [g[0], w], hint="dconv", pads=pads, **attrs)
    elif ctx.lowering.subpixel and pads is not None and sp == 2 and group == 1 and s[0] == s[1] and d == [1, 1]:
        dx = _subpixel_conv_backward(ctx, g[0], wv, x, st=s[0], pads=pads)
    elif pads is not None:
        # Stride > 1: the transposed conv covers [pb, H + pe - r) of the padded input, where
        # r = (H + pb + pe - eff_k) mod s depends on H. Crop the begin padding statically, then
        # crop (pe > r) or zero-pad (pe < r) the end to H dynamically.
        dx = em.op("ConvTranspose", [g[0], w], hint="dconv", pads=pads[:sp] + [0] * sp, **attrs)
        if any(pads[sp:]):
            dx = em.op(
                "Slice",
                [dx, em.const([0] * sp, np.int64), em.tail_shape(x, 2), em.const(list(range(2, 2 + sp)), np.int64)],
            )
        dx = em.pad_end_to(dx, x)
    else:
        full = em.op("ConvTranspose", [g[0], w], hint="dconv", pads=[0] * (2 * sp), **attrs)
        dx = _same_dynamic_slice(ctx, n, full, x, sp)
    return [dx, None, None]


def _subpixel_conv_backward(ctx: Context, g: Grad, wv: np.ndarray, x: str, *, st: int, pads: list[int]) -> str:
    """Strided Conv backward as one stride-1 Conv + DepthToSpace ("sub-pixel" form).

    Output phase (ph, pw) of the transposed conv only meets kernel taps ph + m*s; those taps form
    a small stride-1 kernel per phase. All s*s phase kernels run as one Conv (s*s*Cin output
    channels) and DepthToSpace interleaves them; then crop the begin pads and fit to x's size.
    """
    em = ctx.em
    cout, cin, kh, kw = wv.shape
    m = -(-max(kh, kw) // st)  # taps per phase (ceil)
    sub_w = np.zeros((st * st * cin, cout, m, m), np.float32)
    for ph in range(st):
        for pw in range(st):
            for j in range(m):
                for i in range(m):
                    th, tw = ph + (m - 1 - j) * st, pw + (m - 1 - i) * st
                    if th < kh and tw < kw:
                        rows = slice((ph * st + pw) * cin, (ph * st + pw + 1) * cin)
                        sub_w[rows, :, j, i] = wv[:, :, th, tw].T
    full = em.op("Conv", [g, em.const(sub_w, hint="wsub")], pads=[m - 1] * 4, hint="dconv_sub")
    full = em.op("DepthToSpace", [full], blocksize=st, mode="DCR", hint="dconv_d2s")
    begin = em.const(pads[:2], np.int64)
    crop = em.op("Slice", [full, begin, em.op("Add", [begin, em.tail_shape(x, 2)]), em.const([2, 3], np.int64)])
    return em.pad_end_to(crop, x)


# ------------------------------------------------------------------------------------- pooling
def _argmax_pool_ok(ctx: Context, n: Node) -> bool:
    k = [int(v) for v in n.attrs.get("kernel_shape", [])]
    d = _ints(n.attrs.get("dilations"), len(k), 1)
    auto = str(n.attrs.get("auto_pad", "NOTSET") or "NOTSET")
    return (
        ctx.lowering.maxpool == "argmax"
        and len(k) == 2
        and all(v == 1 for v in d)
        and auto in ("NOTSET", "VALID")
        and int(n.attrs.get("storage_order", 0)) == 0
        and (len(n.outputs) < 2 or not n.outputs[1])
    )


def maxpool_argmax_backward(ctx: Context, n: Node, g: list[Grad]) -> list[Grad]:
    """MaxPool gradient without Indices: ArgMax over the stacked window offsets, then a
    ConvTranspose with one-hot kernels puts each window's gradient on its winning pixel and
    adds overlapping windows. ArgMax returns the first maximum in row-major window order, the
    same tie-breaking as MaxPool's own argmax.
    """
    em = ctx.em
    x, y = n.inputs[0], n.outputs[0]
    gy = g[0]
    assert gy is not None
    kh, kw = (int(v) for v in n.attrs["kernel_shape"])
    st = _ints(n.attrs.get("strides"), 2, 1)
    auto = str(n.attrs.get("auto_pad", "NOTSET") or "NOTSET")
    pt, pl, pb, pr = [0, 0, 0, 0] if auto == "VALID" else _ints(n.attrs.get("pads"), 4, 0)
    kk = kh * kw
    axes = em.const([2, 3], np.int64)
    xshape = em.static_shape(x)
    channels = xshape[1] if xshape and isinstance(xshape[1], int) else None
    if not any((pt, pl, pb, pr)) and channels is not None and not int(n.attrs.get("ceil_mode", 0)):
        # im2col as a depthwise Conv with one-hot kernels (onnxruntime's fast NCHWc path):
        # channel c*k*k + i of the result is window offset i of channel c (x * 1 + 0 is exact).
        pick = np.zeros((channels * kk, 1, kh, kw), np.float32)
        for c in range(channels):
            for i in range(kk):
                pick[c * kk + i, 0, i // kw, i % kw] = 1.0
        cols = em.op("Conv", [x, em.const(pick, hint="im2col_k")], strides=st, group=channels, hint="mpcols")
        stack = em.op(
            "Reshape", [cols, em.op("Concat", [em.const([0, channels, kk], np.int64), em.tail_shape(y, 2)], axis=0)]
        )
    else:
        neg = em.const(np.float32(-np.inf))
        xp = em.op("Pad", [x, em.const([0, 0, pt, pl, 0, 0, pb + st[0], pr + st[1]], np.int64), neg], hint="mpx")
        span = em.op("Mul", [em.tail_shape(y, 2), em.const(st, np.int64)])
        steps = em.const(st, np.int64)
        views = []
        for a in range(kh):
            for b in range(kw):
                start = em.const([a, b], np.int64)
                xs = em.op("Slice", [xp, start, em.op("Add", [start, span]), axes, steps], hint="mpview")
                views.append(em.op("Unsqueeze", [xs, em.const([2], np.int64)]))
        stack = em.op("Concat", views, axis=2, hint="mpstack")  # (N, C, k*k, Ho, Wo)
    best = em.op("ArgMax", [stack], axis=2, keepdims=1, hint="mpbest")  # (N, C, 1, Ho, Wo)
    onehot = em.op("Equal", [best, em.const(np.arange(kk, dtype=np.int64).reshape(1, 1, kk, 1, 1), np.int64)])
    contrib = em.op("Mul", [em.op("Cast", [onehot], to=1), em.op("Unsqueeze", [gy, em.const([2], np.int64)])])
    flat_shape = em.op("Concat", [em.const([-1, kk], np.int64), em.tail_shape(y, 2)], axis=0)
    flat = em.op("Reshape", [contrib, flat_shape])  # (N*C, k*k, Ho, Wo)
    kernel = np.zeros((kk, 1, kh, kw), np.float32)
    for i in range(kk):
        kernel[i, 0, i // kw, i % kw] = 1.0
    placed = em.op("ConvTranspose", [flat, em.const(kernel, hint="onehot_k")], strides=st, hint="mpplace")
    crop = em.op(
        "Slice",
        [placed, em.const([pt, pl], np.int64), em.op("Add", [em.const([pt, pl], np.int64), em.tail_shape(x, 2)]), axes],
    )
    padded = em.op(
        "Pad",
        [
            crop,
            em.op(
                "Concat",
                [em.const([0] * 6, np.int64), em.op("Sub", [em.tail_shape(x, 2), em.tail_shape(crop, 2)])],
                axis=0,
            ),
        ],
    )
    return [em.op("Reshape", [padded, em.shape(x)], hint="dmaxpool")]


def _blocks_pool_ok(ctx: Context, n: Node) -> bool:
    """Non-overlapping square windows (kernel == stride, no pads/ceil/dilation)."""
    k = [int(v) for v in n.attrs.get("kernel_shape", [])]
    s = _ints(n.attrs.get("strides"), len(k), 1)
    return (
        ctx.lowering.blocks_pool
        and len(k) == 2
        and k[0] == k[1] == s[0] == s[1] > 1
        and not any(_ints(n.attrs.get("pads"), 4, 0))
        and str(n.attrs.get("auto_pad", "NOTSET") or "NOTSET") in ("NOTSET", "VALID")
        and not int(n.attrs.get("ceil_mode", 0))
        and all(v == 1 for v in _ints(n.attrs.get("dilations"), 2, 1))
        and int(n.attrs.get("storage_order", 0)) == 0
        and (len(n.outputs) < 2 or not n.outputs[1])
    )


def maxpool_blocks_share_backward(ctx: Context, n: Node, g: list[Grad]) -> list[Grad]:
    """Non-overlapping k x k / k MaxPool as a mask (see ``Lowering.blocks_pool``): the winners
    ``x == Resize_nearest(y)`` share ``g / count`` of their window (count = tied winners)."""
    em = ctx.em
    x, y = n.inputs[0], n.outputs[0]
    gy = g[0]
    assert gy is not None
    k = int(n.attrs["kernel_shape"][0])
    out_hw = em.tail_shape(y, 2)
    cover = em.op("Mul", [out_hw, em.const([k, k], np.int64)])
    xc = em.op("Slice", [x, em.const([0, 0], np.int64), cover, em.const([2, 3], np.int64)], hint="mpcrop")
    scales = em.const([1.0, 1.0, float(k), float(k)], np.float32)
    kw: dict[str, Any] = {"mode": "nearest", "coordinate_transformation_mode": "asymmetric", "nearest_mode": "floor"}
    yup = em.op("Resize", [y, "", scales], **kw)
    win = em.op("Cast", [em.op("Equal", [xc, yup])], to=1)
    # tied maxima share the window's gradient equally (a valid subgradient of max); a single winner
    # gets all of it. The share is computed at the pooled size, then spread over each window.
    ties = em.op("Mul", [em.op("AveragePool", [win], kernel_shape=[k, k], strides=[k, k]),
                         em.const(np.float32(k * k), np.float32)])
    share = em.op("Resize", [em.op("Div", [gy, ties]), "", scales], **kw)
    dx = em.op("Mul", [win, share], hint="dmaxpool")
    return [em.pad_end_to(dx, x)]


def maxpool_blocks_first_backward(ctx: Context, n: Node, g: list[Grad]) -> list[Grad]:
    """Non-overlapping k x k / k MaxPool as a first-winner mask: each window's gradient goes to
    its first maximum in scan order (MaxPool's own choice), found without ArgMax or a
    DepthToSpace. Each pixel carries its scan rank ``k*k - i`` (i = its row-major offset in the
    window) where it equals the window's maximum and 0 elsewhere; the pool of that picks the
    first winner's rank, and a pixel gets the window's gradient where its rank is that."""
    em = ctx.em
    x, y = n.inputs[0], n.outputs[0]
    gy = g[0]
    assert gy is not None
    k = int(n.attrs["kernel_shape"][0])
    kk = k * k
    out_hw = em.tail_shape(y, 2)
    cover = em.op("Mul", [out_hw, em.const([k, k], np.int64)])
    xc = em.op("Slice", [x, em.const([0, 0], np.int64), cover, em.const([2, 3], np.int64)], hint="mpcrop")
    scales = em.const([1.0, 1.0, float(k), float(k)], np.float32)
    kw: dict[str, Any] = {"mode": "nearest", "coordinate_transformation_mode": "asymmetric", "nearest_mode": "floor"}
    win = em.op("Equal", [xc, em.op("Resize", [y, "", scales], **kw)])
    rank = em.const((kk - np.arange(kk, dtype=np.float32)).reshape(1, 1, k, k), np.float32)
    reps = em.op("Concat", [em.const([1, 1], np.int64), out_hw], axis=0)
    ranks = em.op("Tile", [rank, reps], hint="mprank")  # (1, 1, Ho*k, Wo*k)
    scored = em.op("Mul", [em.op("Cast", [win], to=1), ranks])  # Mul, not Where: Where is single-threaded
    first = em.op("MaxPool", [scored], kernel_shape=[k, k], strides=[k, k], hint="mpfirst")
    pick = em.op("Equal", [ranks, em.op("Resize", [first, "", scales], **kw)])
    dx = em.op("Mul", [em.op("Cast", [pick], to=1), em.op("Resize", [gy, "", scales], **kw)], hint="dmaxpool")
    return [em.pad_end_to(dx, x)]


def maxpool_blocks_backward(ctx: Context, n: Node, g: list[Grad]) -> list[Grad]:
    """Non-overlapping k x k / k MaxPool: SpaceToDepth makes each window's k*k values one axis,
    ArgMax picks the first maximum (MaxPool's own tie-breaking), DepthToSpace puts it back."""
    if ctx.lowering.blocks_form == "first":
        return maxpool_blocks_first_backward(ctx, n, g)
    if ctx.lowering.blocks_form == "share":
        return maxpool_blocks_share_backward(ctx, n, g)
    if ctx.lowering.blocks_form != "argmax":
        raise ModelError(f"unknown blocks_form {ctx.lowering.blocks_form!r}", hint="use first, argmax or share")
    em = ctx.em
    x, y = n.inputs[0], n.outputs[0]
    gy = g[0]
    assert gy is not None
    k = int(n.attrs["kernel_shape"][0])
    kk = k * k
    out_hw = em.tail_shape(y, 2)
    cover = em.op("Mul", [out_hw, em.const([k, k], np.int64)])
    axes = em.const([2, 3], np.int64)
    # floor mode: rows/columns beyond the last full window get no gradient
    xc = em.op("Slice", [x, em.const([0, 0], np.int64), cover, axes], hint="mpcrop")
    blocks = em.op("SpaceToDepth", [xc], blocksize=k, hint="mpblocks")  # (N, k*k*C, Ho, Wo)
    shape5 = em.op("Concat", [em.const([0, kk, -1], np.int64), out_hw], axis=0)
    best = em.op("ArgMax", [em.op("Reshape", [blocks, shape5])], axis=1, keepdims=1, hint="mpbest")
    onehot = em.op("Equal", [best, em.const(np.arange(kk, dtype=np.int64).reshape(1, kk, 1, 1, 1), np.int64)])
    contrib = em.op("Mul", [em.op("Cast", [onehot], to=1), em.op("Unsqueeze", [gy, em.const([1], np.int64)])])
    flat = em.op("Reshape", [contrib, em.op("Concat", [em.const([0, -1], np.int64), out_hw], axis=0)])
    dx = em.op("DepthToSpace", [flat], blocksize=k, mode="DCR", hint="dmaxpool")
    return [em.pad_end_to(dx, x)]


def _separable_pool_ok(ctx: Context, n: Node) -> bool:
    """3x3 windows, stride 2, no pads/ceil/dilation, known channel count."""
    xshape = ctx.em.static_shape(n.inputs[0])
    return (
        ctx.lowering.maxpool == "separable"
        and [int(v) for v in n.attrs.get("kernel_shape", [])] == [3, 3]
        and _ints(n.attrs.get("strides"), 2, 1) == [2, 2]
        and not any(_ints(n.attrs.get("pads"), 4, 0))
        and str(n.attrs.get("auto_pad", "NOTSET") or "NOTSET") in ("NOTSET", "VALID")
        and not int(n.attrs.get("ceil_mode", 0))
        and all(v == 1 for v in _ints(n.attrs.get("dilations"), 2, 1))
        and int(n.attrs.get("storage_order", 0)) == 0
        and (len(n.outputs) < 2 or not n.outputs[1])
        and xshape is not None
        and len(xshape) == 4
        and isinstance(xshape[1], int)
    )


def _split3(ctx: Context, g: str, v0: str, v1: str, best: str) -> tuple[str, str, str]:
    """Split g over three window offsets: to offset 0 where v0 == best, else to offset 1 where
    v1 == best, else to offset 2 (the first maximum wins). Exact: each part is g or 0."""
    em = ctx.em
    g0 = em.op("Mul", [g, em.op("Cast", [em.op("Equal", [v0, best])], to=1)], hint="mpg0")
    rest = em.op("Sub", [g, g0])
    g1 = em.op("Mul", [rest, em.op("Cast", [em.op("Equal", [v1, best])], to=1)], hint="mpg1")
    return g0, g1, em.op("Sub", [rest, g1], hint="mpg2")


def _interleave3(ctx: Context, parts: tuple[str, str, str], axis: int, like: str) -> str:
    """Stride-2 placement of three offsets along ``axis``: out[2i] = p0[i] + p2[i-1],
    out[2i+1] = p1[i], cropped to ``like``'s size on that axis (which is 2n+1 or 2n+2)."""
    em = ctx.em
    p0, p1, p2 = parts
    end = [0] * 8
    end[4 + axis] = 1
    begin = [0] * 8
    begin[axis] = 1
    pad_end = em.const(end, np.int64)
    even = em.op("Add", [em.op("Pad", [p0, pad_end]), em.op("Pad", [p2, em.const(begin, np.int64)])])
    odd = em.op("Pad", [p1, pad_end])
    ax = em.const([axis + 1], np.int64)
    pair = em.op("Concat", [em.op("Unsqueeze", [even, ax]), em.op("Unsqueeze", [odd, ax])], axis=axis + 1)
    if axis == 2:
        shape = em.op("Concat", [em.const([0, 0, -1], np.int64), em.tail_shape(p0, 3)], axis=0)
    else:
        shape = em.const([0, 0, 0, -1], np.int64)
    full = em.op("Reshape", [pair, shape], hint="mpinterleave")
    size = em.op("Slice", [em.shape(like), em.const([axis], np.int64), em.const([axis + 1], np.int64)])
    return str(em.op("Slice", [full, em.const([0], np.int64), size, em.const([axis], np.int64)]))


def maxpool_separable_backward(ctx: Context, n: Node, g: list[Grad]) -> list[Grad]:
    """3x3 / 2 MaxPool gradient as a row pass then a column pass (no Indices, no scatter).

    Row-major first maximum of a 3x3 window = the first of its three rows whose row maximum
    equals the window maximum, then the first column in that row where x equals the row
    maximum. So: h = MaxPool 1x3/(1,2) of x (the row maxima); g goes to the winning row of h
    (3-way masks on h's row views against y), is placed back at stride 2 over rows, then goes
    to the winning column (masks on x's column views against h) and is placed back over
    columns. Column views come from one-hot depthwise Convs (x * 1 + 0 is exact).
    """
    em = ctx.em
    x, y = n.inputs[0], n.outputs[0]
    gy = g[0]
    assert gy is not None
    xshape = em.static_shape(x)
    assert xshape is not None and isinstance(xshape[1], int)
    channels = xshape[1]
    h = em.op("MaxPool", [x], kernel_shape=[1, 3], strides=[1, 2], hint="mprowmax")  # (N, C, H, Wo)
    cols = []
    for b in range(2):
        pick = np.zeros((channels, 1, 1, 3), np.float32)
        pick[:, 0, 0, b] = 1.0
        cols.append(em.op("Conv", [x, em.const(pick, hint="mpcol_k")], strides=[1, 2], group=channels, hint="mpcol"))
    ho = em.op("Slice", [em.shape(y), em.const([2], np.int64), em.const([3], np.int64)])
    span = em.op("Sub", [em.op("Mul", [ho, em.const([2], np.int64)]), em.const([1], np.int64)])
    rows = []
    for a in range(2):
        start = em.const([a], np.int64)
        end = em.op("Add", [span, start])
        rows.append(em.op("Slice", [h, start, end, em.const([2], np.int64), em.const([2], np.int64)], hint="mprow"))
    gh = _interleave3(ctx, _split3(ctx, gy, rows[0], rows[1], y), 2, x)
    dx = _interleave3(ctx, _split3(ctx, gh, cols[0], cols[1], h), 3, x)
    return [em.op("Identity", [dx], hint="dmaxpool")]


def maxpool_forward(ctx: Context, n: Node) -> None:
    em = ctx.em
    if _blocks_pool_ok(ctx, n) or _argmax_pool_ok(ctx, n) or _separable_pool_ok(ctx, n):
        em.raw("MaxPool", n.inputs, n.outputs[:1], **n.attrs)
        return
    if int(n.attrs.get("storage_order", 0)) != 0:
        raise ModelError(f"MaxPool node {n.name!r} uses storage_order=1", hint="re-export with row-major order")
    idx = n.outputs[1] if len(n.outputs) > 1 and n.outputs[1] else em.fresh("pool_idx")
    em.raw("MaxPool", n.inputs, [n.outputs[0], idx], **n.attrs)
    ctx.pool_indices[n.outputs[0]] = idx


def _relu_sources(ctx: Context, x: str) -> list[str] | None:
    """The Relu outputs whose masks make up the mask of ``x`` (a Relu output, or a Concat of
    Relu outputs), when nothing but this path reads them; else None."""

    def alone(t: str) -> bool:
        return ctx.readers.get(t, 0) == 1 and t not in ctx.seeded

    node = ctx.producers.get(x)
    if node is None or not alone(x):
        return None
    if node.op == "Relu":
        return [x]
    if node.op == "Concat" and all(
        i and alone(i) and getattr(ctx.producers.get(i), "op", None) == "Relu" for i in node.inputs
    ):
        return list(node.inputs)
    return None


def _relu_into_pool(ctx: Context, n: Node, g: list[Grad]) -> list[Grad]:
    """Apply the mask of the Relu(s) feeding only this MaxPool on the pool output (see Lowering)."""
    gy = g[0]
    sources = _relu_sources(ctx, n.inputs[0]) if ctx.lowering.relu_pool and gy is not None else None
    if not sources:
        return g
    em = ctx.em
    mask = em.op("Cast", [em.op("Greater", [n.outputs[0], em.const(0.0)])], to=1, hint="relumask_pooled")
    ctx.premasked.update(sources)
    return [em.op("Mul", [gy, mask], hint="drelu_pooled"), *g[1:]]


def maxpool_backward(ctx: Context, n: Node, g: list[Grad]) -> list[Grad]:
    g = _relu_into_pool(ctx, n, g)
    if n.outputs[0] not in ctx.pool_indices:
        if _blocks_pool_ok(ctx, n):
            return maxpool_blocks_backward(ctx, n, g)
        if _separable_pool_ok(ctx, n):
            return maxpool_separable_backward(ctx, n, g)
        return maxpool_argmax_backward(ctx, n, g)
    em = ctx.em
    x = n.inputs[0]
    idx = ctx.pool_indices[n.outputs[0]]
    size = em.op("Reshape", [em.op("Size", [x]), em.const([1], np.int64)])
    from onnx import helper

    zeros = em.op("ConstantOfShape", [size], value=helper.make_tensor("z", 1, [1], [0.0]), hint="mpzeros")
    flat_i = em.op("Reshape", [idx, em.const([-1], np.int64)])
    flat_g = em.op("Reshape", [g[0], em.const([-1], np.int64)])
    scat = em.op("ScatterElements", [zeros, flat_i, flat_g], axis=0, reduction="add", hint="dmaxpool")
    return [em.op("Reshape", [scat, em.shape(x)])]


def avgpool_backward(ctx: Context, n: Node, g: list[Grad]) -> list[Grad]:
    em = ctx.em
    x, y = n.inputs[0], n.outputs[0]
    ks = n.attrs.get("kernel_shape")
    if not ks:
        raise ModelError(f"AveragePool node {n.name!r} has no kernel_shape", hint="re-export the model")
    k = [int(v) for v in ks]
    sp = len(k)
    s = _ints(n.attrs.get("strides"), sp, 1)
    d = _ints(n.attrs.get("dilations"), sp, 1)
    if any(v != 1 for v in d):
        raise ModelError(f"AveragePool node {n.name!r} uses dilations {d}", hint="only dilation 1 is supported")
    pads = _static_pads(n, k, s, d)
    if pads is None:
        raise ModelError(
            f"AveragePool node {n.name!r} uses auto_pad SAME with stride {s}",
            hint="re-export the model with explicit pads",
        )
    ceil = int(n.attrs.get("ceil_mode", 0))
    include = int(n.attrs.get("count_include_pad", 0))
    kernel = em.const(np.ones([1, 1, *k], np.float32), hint="ones_k")
    flat_shape = em.const([-1, 1] + [0] * sp, np.int64)
    gr = em.op("Reshape", [g[0], flat_shape], hint="gpool")
    if include and not ceil:
        scaled = em.op("Mul", [gr, em.const(1.0 / float(np.prod(k)))])
    else:
        # Divisor per output position: count of input (or padded-input) cells in its window.
        one_shape = em.op("Concat", [em.const([1, 1], np.int64), em.tail_shape(x, 2)], axis=0)
        from onnx import helper

        ones = em.op("ConstantOfShape", [one_shape], value=helper.make_tensor("o", 1, [1], [1.0]))
        begin, end = pads[:sp], pads[sp:]
        lead = [0, 0]
        if include:
            ones = em.op("Pad", [ones, em.const(lead + begin + lead + end, np.int64), em.const(1.0)])
            pad_b, pad_e = [0] * sp, [si - 1 for si in s]
        else:
            pad_b, pad_e = begin, [e + si - 1 for e, si in zip(end, s, strict=True)]
        ones = em.op("Pad", [ones, em.const(lead + pad_b + lead + pad_e, np.int64)])
        counts = em.op("Conv", [ones, kernel], strides=s, hint="poolcount")
        out_hw = em.tail_shape(y, 2)
        counts = em.op(
            "Slice", [counts, em.const([0] * sp, np.int64), out_hw, em.const(list(range(2, 2 + sp)), np.int64)]
        )
        scaled = em.op("Div", [gr, counts])
    full = em.op("ConvTranspose", [scaled, kernel], strides=s, hint="dpool")
    size = em.tail_shape(x, 2)
    begin_c = em.const(pads[:sp], np.int64)
    crop = em.op("Slice", [full, begin_c, em.op("Add", [begin_c, size]), em.const(list(range(2, 2 + sp)), np.int64)])
    diff = em.op("Sub", [size, em.tail_shape(crop, 2)])
    padded = em.op("Pad", [crop, em.op("Concat", [em.const([0] * (sp + 4), np.int64), diff], axis=0)])
    return [em.op("Reshape", [padded, em.shape(x)])]


def reducemean_backward(ctx: Context, n: Node, g: list[Grad]) -> list[Grad]:
    """ReduceMean over constant axes (opset 18 ``axes`` input, or the old attribute): the
    gradient, unsqueezed back when ``keepdims`` = 0, spread evenly over each reduced window
    (Expand to the input's shape, divided by Size(x) / Size(y)). No axes reduce every axis,
    unless ``noop_with_empty_axes`` makes it an identity."""
    em = ctx.em
    x, y = n.inputs[0], n.outputs[0]
    r = em.rank(x, "ReduceMean input")
    if len(n.inputs) > 1 and n.inputs[1]:
        axes_v = _need_const(ctx, n.inputs[1], n, "axes")
        axes = [int(a) % r for a in np.asarray(axes_v).reshape(-1)]
    else:
        axes = [int(a) % r for a in n.attrs.get("axes", [])]
    if not axes:
        if int(n.attrs.get("noop_with_empty_axes", 0)):
            return [g[0]] + [None] * (len(n.inputs) - 1)
        axes = list(range(r))
    gy = g[0]
    assert gy is not None
    if not int(n.attrs.get("keepdims", 1)):
        gy = em.op("Unsqueeze", [gy, em.const(sorted(axes), np.int64)])
    count = em.op("Cast", [em.op("Div", [em.op("Size", [x]), em.op("Size", [y])])], to=1)
    dx = em.op("Expand", [em.op("Div", [gy, count]), em.shape(x)], hint="dreducemean")
    return [dx] + [None] * (len(n.inputs) - 1)


def gap_backward(ctx: Context, n: Node, g: list[Grad]) -> list[Grad]:
    em = ctx.em
    x = n.inputs[0]
    area = em.op("Cast", [em.op("ReduceProd", [em.tail_shape(x, 2)], keepdims=0)], to=1)
    return [em.op("Expand", [em.op("Div", [g[0], area]), em.shape(x)], hint="dgap")]


# ----------------------------------------------------------------------------------------- LRN
def _channel_window_sum(ctx: Context, z: str, rank: int, size: int, *, before: int, after: int) -> str:
    em = ctx.em
    u = em.op("Unsqueeze", [z, em.const([1], np.int64)])
    w = em.const(np.ones([1, 1, size] + [1] * (rank - 2), np.float32), hint="lrn_k")
    pads = [before] + [0] * (rank - 2) + [after] + [0] * (rank - 2)
    c = em.op("Conv", [u, w], pads=pads, hint="lrnsum")
    return str(em.op("Squeeze", [c, em.const([1], np.int64)]))


def lrn_backward(ctx: Context, n: Node, g: list[Grad]) -> list[Grad]:
    em = ctx.em
    x = n.inputs[0]
    size = int(n.attrs["size"])
    alpha = float(n.attrs.get("alpha", 1e-4))
    beta = float(n.attrs.get("beta", 0.75))
    bias = float(n.attrs.get("bias", 1.0))
    r = em.rank(x, "LRN input")
    lo, hi = (size - 1) // 2, size - 1 - (size - 1) // 2
    ssum = _channel_window_sum(ctx, em.op("Mul", [x, x]), r, size, before=lo, after=hi)
    dnm = em.op("Add", [em.op("Mul", [ssum, em.const(alpha / size)]), em.const(bias)], hint="lrn_d")
    dp = em.op("Pow", [dnm, em.const(-beta)])
    t = em.op("Div", [em.op("Mul", [em.op("Mul", [g[0], x]), dp]), dnm])
    tsum = _channel_window_sum(ctx, t, r, size, before=hi, after=lo)
    first = em.op("Mul", [g[0], dp])
    second = em.op("Mul", [em.op("Mul", [x, tsum]), em.const(2.0 * alpha * beta / size)])
    return [em.op("Sub", [first, second], hint="dlrn")]


# ----------------------------------------------------------------------------------- BatchNorm
def bn_forward(ctx: Context, n: Node) -> None:
    attrs = {k: v for k, v in n.attrs.items() if k not in ("training_mode",)}
    ctx.em.raw("BatchNormalization", n.inputs, n.outputs[:1], **attrs)


def bn_backward(ctx: Context, n: Node, g: list[Grad]) -> list[Grad]:
    em = ctx.em
    scale = _need_const(ctx, n.inputs[1], n, "scale")
    var = _need_const(ctx, n.inputs[4], n, "variance")
    eps = float(n.attrs.get("epsilon", 1e-5))
    r = em.rank(n.inputs[0], "BatchNormalization input")
    k = (scale / np.sqrt(var + eps)).astype(np.float32).reshape([1, -1] + [1] * (r - 2))
    return [em.op("Mul", [g[0], em.const(k)], hint="dbn")]


# ------------------------------------------------------------------------------ Concat / Split
def _axis(ctx: Context, n: Node, name: str, default: int | None = None) -> int:
    a = n.attrs.get("axis", default)
    if a is None:
        raise ModelError(f"{n.op} node {n.name!r} has no axis", hint="re-export the model")
    a = int(a)
    return a + ctx.em.rank(name, f"{n.op} axis") if a < 0 else a


def concat_backward(ctx: Context, n: Node, g: list[Grad]) -> list[Grad]:
    em = ctx.em
    axis = _axis(ctx, n, n.outputs[0])
    sizes: list[int] = []
    for i in n.inputs:
        sh = em.static_shape(i)
        dim = sh[axis] if sh is not None else None
        if not isinstance(dim, int):
            break
        sizes.append(dim)
    if len(sizes) == len(n.inputs):
        split = em.const(sizes, np.int64)
    else:
        parts = [
            em.op("Slice", [em.shape(i), em.const([axis], np.int64), em.const([axis + 1], np.int64)]) for i in n.inputs
        ]
        split = em.op("Concat", parts, axis=0)
    if len(n.inputs) == 1:
        return [g[0]]
    outs = em.op("Split", [g[0], split], n_out=len(n.inputs), axis=axis, hint="dconcat")
    return list(outs)


def split_backward(ctx: Context, n: Node, g: list[Grad]) -> list[Grad]:
    em = ctx.em
    axis = _axis(ctx, n, n.inputs[0], 0)
    parts = [gi if gi is not None else em.zeros_like(o) for gi, o in zip(g, n.outputs, strict=True)]
    dx = parts[0] if len(parts) == 1 else em.op("Concat", parts, axis=axis, hint="dsplit")
    return [dx] + [None] * (len(n.inputs) - 1)


# ----------------------------------------------------------------------------------------- Pad
_BIG = 1 << 62


def _pad_adjoint_axis(ctx: Context, g: str, *, axis: int, b: int, e: int, mode: str) -> str:
    """Adjoint of padding one axis by (b, e) >= 0 in ``reflect`` or ``edge`` mode: the centre of
    g, plus the border gradients added back onto the input cells they were copied from.

    reflect: y = [x_b .. x_1, x_0 .. x_{L-1}, x_{L-2} .. x_{L-1-e}], so the reversed begin
    border adds onto x[1 : b+1] and the reversed end border onto x[L-1-e : L-1];
    edge: every begin border cell is x_0 and every end border cell is x_{L-1}.
    All slices count from the begin or the end of the axis, so L may be dynamic.
    """
    em = ctx.em
    ax = em.const([axis], np.int64)

    def sl(t: str, start: int, end: int, step: int = 1) -> str:
        ins = [t, em.const([start], np.int64), em.const([end], np.int64), ax]
        if step != 1:
            ins.append(em.const([step], np.int64))
        return str(em.op("Slice", ins, hint="dpad_slice"))

    centre = sl(g, b, -e if e else _BIG)
    if b:
        gb = sl(g, 0, b)
        if mode == "reflect":
            part = sl(gb, -1, -_BIG, -1)
            centre = em.op(
                "Concat",
                [sl(centre, 0, 1), em.op("Add", [sl(centre, 1, b + 1), part]), sl(centre, b + 1, _BIG)],
                axis=axis,
            )
        else:
            part = em.op("ReduceSum", [gb, ax], keepdims=1)
            centre = em.op("Concat", [em.op("Add", [sl(centre, 0, 1), part]), sl(centre, 1, _BIG)], axis=axis)
    if e:
        ge = sl(g, -e, _BIG)
        if mode == "reflect":
            part = sl(ge, -1, -_BIG, -1)
            centre = em.op(
                "Concat",
                [sl(centre, 0, -(e + 1)), em.op("Add", [sl(centre, -(e + 1), -1), part]), sl(centre, -1, _BIG)],
                axis=axis,
            )
        else:
            part = em.op("ReduceSum", [ge, ax], keepdims=1)
            centre = em.op("Concat", [sl(centre, 0, -1), em.op("Add", [sl(centre, -1, _BIG), part])], axis=axis)
    return str(centre)


def _pad_constant_adjoint(ctx: Context, n: Node, gy: str, pads: list[int] | None, r: int) -> str:
    """Constant mode: slice the padded border off g, then zero-pad the cropped cells back.
    Only non-negative pads are emitted (onnxruntime's CUDA Pad and onnx's reference evaluator
    do not all take negative ones); runtime pads are split with Max(+-pads, 0)."""
    em = ctx.em
    if pads is not None:
        if len(pads) != 2 * r:
            raise ModelError(f"Pad node {n.name!r} has {len(pads)} pads for rank {r}", hint="re-export the model")
        axes = [a for a in range(r) if pads[a] > 0 or pads[r + a] > 0]
        dx = gy
        if axes:
            starts = [max(pads[a], 0) for a in axes]
            ends = [-pads[r + a] if pads[r + a] > 0 else _BIG for a in axes]
            dx = em.op("Slice", [gy, em.const(starts, np.int64), em.const(ends, np.int64), em.const(axes, np.int64)])
        crops = [max(-p, 0) for p in pads]
        if any(crops):
            dx = em.op("Pad", [dx, em.const(crops, np.int64)], hint="dpad_uncrop")
        return str(em.op("Identity", [dx], hint="dpad"))
    if len(n.inputs) < 2 or not n.inputs[1]:
        raise ModelError(f"Pad node {n.name!r} has no pads", hint="re-export the model")
    if len(n.inputs) > 3 and n.inputs[3]:
        if n.inputs[3] not in em.fg.consts:
            raise ModelError(f"Pad node {n.name!r}: axes computed at run time", hint="re-export with constant axes")
        axes = [int(a) % r for a in np.asarray(em.fg.consts[n.inputs[3]]).reshape(-1)]
    else:
        axes = list(range(r))
    k = len(axes)
    p = n.inputs[1]
    zero = em.const([0] * k, np.int64)
    pb = em.op("Slice", [p, em.const([0], np.int64), em.const([k], np.int64)])
    pe = em.op("Slice", [p, em.const([k], np.int64), em.const([2 * k], np.int64)])
    ax = em.const(axes, np.int64)
    dims = em.op("Gather", [em.shape(gy), ax], axis=0)
    ends = em.op("Sub", [dims, em.op("Max", [pe, zero])])
    dx = em.op("Slice", [gy, em.op("Max", [pb, zero]), ends, ax], hint="dpad_crop")
    crops = em.op("Max", [em.op("Neg", [p]), em.const([0] * (2 * k), np.int64)])
    return str(em.op("Pad", [dx, crops, em.const(0.0), ax], hint="dpad"))


def pad_backward(ctx: Context, n: Node, g: list[Grad]) -> list[Grad]:
    """Pad in ``constant``, ``reflect`` and ``edge`` modes, any pads (negative = crop), given
    as the ``pads`` input (with the optional ``axes`` input) or the old ``pads`` attribute.

    onnxruntime's semantics per axis (checked): crop the negative pads first, then pad the
    positive ones from the cropped tensor. So the adjoint per axis undoes the padding
    (:func:`_pad_adjoint_axis`, or a plain crop in constant mode, which also works for pads
    computed at run time), then zero-pads the cropped cells back.
    """
    from dreamstate.models.graph import constant_pads

    em = ctx.em
    x = n.inputs[0]
    gy = g[0]
    assert gy is not None
    mode = str(n.attrs.get("mode", "constant") or "constant")
    nin = len(n.inputs)
    if len(n.inputs) > 2 and n.inputs[2] and _diff(ctx, n.inputs[2]):
        raise ModelError(
            f"Pad node {n.name or n.outputs[0]!r}: the fill value depends on the image",
            hint="the dream compiler needs a constant fill value",
        )
    r = em.rank(x, "Pad input")
    pads = constant_pads(n, em.fg.consts, r)
    if mode == "constant":
        return [_pad_constant_adjoint(ctx, n, gy, pads, r)] + [None] * (nin - 1)
    if mode not in ("reflect", "edge"):
        raise ModelError(
            f"Pad node {n.name or n.outputs[0]!r} uses mode {mode!r}; the dream compiler supports "
            "constant, reflect and edge",
            hint="re-export the model with one of those padding modes",
        )
    if pads is None:
        raise ModelError(
            f"Pad node {n.name or n.outputs[0]!r} ({mode}) has pads computed at run time",
            hint="re-export the model with constant pads (onnx constant folding)",
        )
    if len(pads) != 2 * r:
        raise ModelError(f"Pad node {n.name!r} has {len(pads)} pads for rank {r}", hint="re-export the model")
    dx = gy
    for a in range(r):
        dx = _pad_adjoint_axis(ctx, dx, axis=a, b=max(pads[a], 0), e=max(pads[r + a], 0), mode=mode)
    crops = [max(-p, 0) for p in pads]
    if any(crops):
        dx = em.op("Pad", [dx, em.const(crops, np.int64)], hint="dpad_uncrop")
    return [em.op("Identity", [dx], hint="dpad")] + [None] * (nin - 1)


# ------------------------------------------------------------------------------ elementwise
def _unbroadcast(ctx: Context, grad: str, inp: str, out: str) -> str:
    em = ctx.em
    si, so = em.static_shape(inp), em.static_shape(out)
    if si is None or so is None:
        raise ModelError(
            f"cannot tell how {inp!r} broadcasts into {out!r} (unknown shapes)", hint="re-export with shapes"
        )
    ro, ri = len(so), len(si)
    axes = []
    for dim in range(ro):
        di = dim - (ro - ri)
        if di < 0 or (si[di] == 1 and so[dim] != 1):
            axes.append(dim)
    if not axes:
        return grad if ri == ro else str(em.op("Reshape", [grad, em.shape(inp)]))
    red = em.op("ReduceSum", [grad, em.const(axes, np.int64)], keepdims=1, hint="unbroadcast")
    return str(em.op("Reshape", [red, em.shape(inp)]))


def _diff(ctx: Context, name: str) -> bool:
    return name not in ctx.em.fg.consts and name in ctx.diff


def binary_backward(ctx: Context, n: Node, g: list[Grad]) -> list[Grad]:
    em = ctx.em
    a, b = n.inputs[0], n.inputs[1]
    y = n.outputs[0]
    gy = g[0]
    assert gy is not None
    ga: Grad = None
    gb: Grad = None
    if n.op == "Add":
        ga, gb = gy, gy
    elif n.op == "Sub":
        ga = gy
        gb = em.op("Neg", [gy]) if _diff(ctx, b) else None
    elif n.op == "Mul":
        ga = em.op("Mul", [gy, b]) if _diff(ctx, a) else None
        gb = em.op("Mul", [gy, a]) if _diff(ctx, b) else None
    elif n.op == "Div":
        ga = em.op("Div", [gy, b]) if _diff(ctx, a) else None
        gb = em.op("Neg", [em.op("Div", [em.op("Mul", [gy, y]), b])]) if _diff(ctx, b) else None
    out: list[Grad] = []
    for inp, gi in ((a, ga), (b, gb)):
        out.append(_unbroadcast(ctx, gi, inp, y) if gi is not None and _diff(ctx, inp) else None)
    return out


# -------------------------------------------------------------------------------- activations
def relu_backward(ctx: Context, n: Node, g: list[Grad]) -> list[Grad]:
    em = ctx.em
    if n.outputs[0] in ctx.premasked:
        return [g[0]]  # masked downstream by the MaxPool that alone reads it
    # y = relu(x) >= 0, so Sign(y) is exactly the 0/1 mask; Mul is much cheaper than Where here.
    mode = ctx.lowering.relu
    if mode == "where":
        mask = em.op("Greater", [n.outputs[0], em.const(0.0)], hint="relumask")
        return [em.op("Where", [mask, g[0], em.const(0.0)], hint="drelu")]
    if mode == "cast":
        mask = em.op("Cast", [em.op("Greater", [n.outputs[0], em.const(0.0)])], to=1, hint="relumask")
        return [em.op("Mul", [g[0], mask], hint="drelu")]
    mask = em.op("Sign", [n.outputs[0]], hint="relumask")
    return [em.op("Mul", [g[0], mask], hint="drelu")]


def leaky_backward(ctx: Context, n: Node, g: list[Grad]) -> list[Grad]:
    em = ctx.em
    alpha = float(n.attrs.get("alpha", 0.01))
    if alpha <= 0:
        mask = em.op("Greater", [n.inputs[0], em.const(0.0)])
    else:
        mask = em.op("Greater", [n.outputs[0], em.const(0.0)])
    return [em.op("Where", [mask, g[0], em.op("Mul", [g[0], em.const(alpha)])], hint="dleaky")]


def clip_backward(ctx: Context, n: Node, g: list[Grad]) -> list[Grad]:
    em = ctx.em
    y = n.outputs[0]
    conds = []
    if len(n.inputs) > 1 and n.inputs[1]:
        conds.append(em.op("Greater", [y, n.inputs[1]]))
    if len(n.inputs) > 2 and n.inputs[2]:
        conds.append(em.op("Less", [y, n.inputs[2]]))
    if not conds:
        return [g[0], None, None]
    mask = conds[0] if len(conds) == 1 else em.op("And", conds)
    # g * Cast(mask): exact (mask is 0/1) and much faster than Where in onnxruntime's CPU EP
    return [em.op("Mul", [g[0], em.op("Cast", [mask], to=1)], hint="dclip"), None, None]


def sigmoid_backward(ctx: Context, n: Node, g: list[Grad]) -> list[Grad]:
    em = ctx.em
    y = n.outputs[0]
    d = em.op("Mul", [y, em.op("Sub", [em.const(1.0), y])])
    return [em.op("Mul", [g[0], d], hint="dsigmoid")]


def hardsigmoid_backward(ctx: Context, n: Node, g: list[Grad]) -> list[Grad]:
    em = ctx.em
    alpha = float(n.attrs.get("alpha", 0.2))
    y = n.outputs[0]
    mask = em.op("And", [em.op("Greater", [y, em.const(0.0)]), em.op("Less", [y, em.const(1.0)])])
    return [em.op("Mul", [em.op("Mul", [g[0], em.const(alpha)]), em.op("Cast", [mask], to=1)], hint="dhsig")]


def hardswish_backward(ctx: Context, n: Node, g: list[Grad]) -> list[Grad]:
    em = ctx.em
    x = n.inputs[0]
    mid = em.op("Add", [em.op("Mul", [x, em.const(1.0 / 3.0)]), em.const(0.5)])
    slope = em.op(
        "Where",
        [
            em.op("Less", [x, em.const(-3.0)]),
            em.const(0.0),
            em.op("Where", [em.op("Greater", [x, em.const(3.0)]), em.const(1.0), mid]),
        ],
    )
    return [em.op("Mul", [g[0], slope], hint="dhswish")]


def softmax_backward(ctx: Context, n: Node, g: list[Grad]) -> list[Grad]:
    em = ctx.em
    y = n.outputs[0]
    axis = _axis(ctx, n, y, -1)
    s = em.op("ReduceSum", [em.op("Mul", [g[0], y]), em.const([axis], np.int64)], keepdims=1)
    return [em.op("Mul", [y, em.op("Sub", [g[0], s])], hint="dsoftmax")]


def passthrough_backward(ctx: Context, n: Node, g: list[Grad]) -> list[Grad]:
    return [g[0]] + [None] * (len(n.inputs) - 1)


def dropout_forward(ctx: Context, n: Node) -> None:
    ctx.em.raw("Identity", n.inputs[:1], n.outputs[:1])


def reshape_backward(ctx: Context, n: Node, g: list[Grad]) -> list[Grad]:
    em = ctx.em
    return [em.op("Reshape", [g[0], em.shape(n.inputs[0])], hint="dreshape")] + [None] * (len(n.inputs) - 1)


def transpose_backward(ctx: Context, n: Node, g: list[Grad]) -> list[Grad]:
    em = ctx.em
    r = em.rank(n.inputs[0], "Transpose input")
    perm = [int(p) for p in n.attrs.get("perm", list(range(r))[::-1])]
    inv = [int(i) for i in np.argsort(perm)]
    return [em.op("Transpose", [g[0]], perm=inv, hint="dtranspose")]


# ------------------------------------------------------------------------------- Gemm / MatMul
def gemm_backward(ctx: Context, n: Node, g: list[Grad]) -> list[Grad]:
    em = ctx.em
    a, b = n.inputs[0], n.inputs[1]
    c = n.inputs[2] if len(n.inputs) > 2 and n.inputs[2] else None
    alpha = float(n.attrs.get("alpha", 1.0))
    beta = float(n.attrs.get("beta", 1.0))
    ta, tb = int(n.attrs.get("transA", 0)), int(n.attrs.get("transB", 0))
    gy = g[0]
    assert gy is not None
    out: list[Grad] = [None, None, None]
    if _diff(ctx, a):
        # d op(A) = alpha * g @ op(B)^T
        da = em.op("Gemm", [gy, b], alpha=alpha, transB=0 if tb else 1, hint="dgemm_a")
        out[0] = em.op("Transpose", [da], perm=[1, 0]) if ta else da
    if _diff(ctx, b):
        db = em.op("Gemm", [a, gy], alpha=alpha, transA=0 if ta else 1, hint="dgemm_b")
        out[1] = em.op("Transpose", [db], perm=[1, 0]) if tb else db
    if c is not None and _diff(ctx, c):
        gc = em.op("Mul", [gy, em.const(beta)])
        out[2] = _unbroadcast(ctx, gc, c, n.outputs[0])
    return out


def _swap_last(ctx: Context, name: str, what: str) -> str:
    em = ctx.em
    if name in em.fg.consts:
        arr = em.fg.consts[name]
        return em.const(np.swapaxes(arr, -1, -2).copy(), arr.dtype.type, hint="wT")
    r = em.rank(name, what)
    perm = [*range(r - 2), r - 1, r - 2]
    return str(em.op("Transpose", [name], perm=perm))


def matmul_backward(ctx: Context, n: Node, g: list[Grad]) -> list[Grad]:
    em = ctx.em
    a, b = n.inputs
    y = n.outputs[0]
    gy = g[0]
    assert gy is not None
    for t in (a, b):
        if len(em.static_shape(t) or []) < 2:
            raise ModelError(
                f"MatMul node {n.name!r}: 1-D operand {t!r} is not supported", hint="use Gemm or 2-D MatMul"
            )
    out: list[Grad] = [None, None]
    if _diff(ctx, a):
        da = em.op("MatMul", [gy, _swap_last(ctx, b, "MatMul B")], hint="dmatmul_a")
        out[0] = _unbroadcast(ctx, da, a, y)
    if _diff(ctx, b):
        db = em.op("MatMul", [_swap_last(ctx, a, "MatMul A"), gy], hint="dmatmul_b")
        out[1] = _unbroadcast(ctx, db, b, y)
    return out


RULES: dict[str, Rule] = {
    "Conv": Rule(conv_backward),
    "Relu": Rule(relu_backward),
    "LeakyRelu": Rule(leaky_backward),
    "Clip": Rule(clip_backward),
    "Sigmoid": Rule(sigmoid_backward),
    "HardSigmoid": Rule(hardsigmoid_backward),
    "HardSwish": Rule(hardswish_backward),
    "MaxPool": Rule(maxpool_backward, maxpool_forward),
    "AveragePool": Rule(avgpool_backward),
    "GlobalAveragePool": Rule(gap_backward),
    "ReduceMean": Rule(reducemean_backward),
    "LRN": Rule(lrn_backward),
    "BatchNormalization": Rule(bn_backward, bn_forward),
    "Concat": Rule(concat_backward),
    "Split": Rule(split_backward),
    "Add": Rule(binary_backward),
    "Sub": Rule(binary_backward),
    "Mul": Rule(binary_backward),
    "Div": Rule(binary_backward),
    "Reshape": Rule(reshape_backward),
    "Flatten": Rule(reshape_backward),
    "Squeeze": Rule(reshape_backward),
    "Unsqueeze": Rule(reshape_backward),
    "Transpose": Rule(transpose_backward),
    "Gemm": Rule(gemm_backward),
    "MatMul": Rule(matmul_backward),
    "Dropout": Rule(passthrough_backward, dropout_forward),
    "Identity": Rule(passthrough_backward),
    "Softmax": Rule(softmax_backward),
    "Pad": Rule(pad_backward),
}

SUPPORTED_OPS: frozenset[str] = frozenset(RULES) | NO_GRADIENT


def supported_ops() -> Sequence[str]:
    return sorted(SUPPORTED_OPS)
