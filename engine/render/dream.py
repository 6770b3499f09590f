"""DeepDream on a still: octaves, normalised steps, roll jitter, tiling, masks and guides.

The algorithm follows google/deepdream's notebook:

* Octaves: the image is shrunk ``octaves - 1`` times by ``octave_scale``; dreaming starts at
  the smallest, and only the *detail* added at one octave (dreamed minus its base) is carried
  up (resized) and added to the next octave's base.
* Steps: ``step`` is in display levels (0..255 of the shown image), for every model. With
  ``s_c = dx_c / dp`` the model-space change of one display level in input channel c
  (``StepModel.pixel_scale``: ``range / (255 * std_c)``), the gradient in display units is
  ``g_p = g * s`` and the step is ``x += (step / mean|g_p|) * g_p * s``: a normalised ascent
  step in display space (Google's notebook: ``step / mean|g| * g`` with step 1.5 in 0..255
  Caffe space), so the mean change on screen is ``step`` levels before clipping, whatever the
  model's range, mean, std or channel order; then ``x`` is clipped to the valid range.
* Jitter: a random roll of up to ``jitter`` pixels before each gradient, rolled back after.
* Tiling: frames larger than ``tile`` pixels are split into near-equal tiles whose gradients are
  computed one at a time (bounded memory on 1080p and larger); the roll moves the seams every
  step, so they do not show.
* Masks: per-pixel gradient weights; the result is composited as ``src + mask * (out - src)``
  so pixels where the mask is 0 stay exactly as they were.
* Guide: another image's layer features steer the objective (``DreamModel.step(guide=...)``).
* Fused steps: where a frame needs neither tiles nor padding and the model has ``ascend``
  (``models.dream.DreamModel``), an octave's steps run as one ``ascend`` call: the fused ascent
  graph, chained with IOBinding, so the frame stays on the device (CUDA) between steps and only
  the last one comes back. Same shifts from the same seed, same maths; the numpy loop below
  is the path for tiles, padding and step models without ``ascend``.

Everything here works on a ``StepModel``: anything with ``DreamModel``'s methods (the real
``models.dream.DreamModel``, or a wrapper around one that, e.g., slows it down in a test).
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

import numpy as np
import numpy.typing as npt

from dreamstate.engine.core.errors import RenderError
from dreamstate.engine.core.images import RGB, resize
from dreamstate.engine.core.records import DreamRecipe
from dreamstate.engine.render.masks import Mask, fit_mask
from dreamstate.models.dream import ascent_update

log = logging.getLogger("dreamstate.render")

Tensor = npt.NDArray[np.float32]
Progress = Callable[[int, int], None]
MIN_OCTAVE_SIDE = 48


class StepModel(Protocol):
    """What the renderer needs from a dream model (``models.dream.DreamModel`` has it)."""

    @property
    def name(self) -> str: ...
    @property
    def layers(self) -> tuple[str, ...]: ...
    @property
    def pixel_scale(self) -> npt.NDArray[np.float32]: ...
    def to_model_space(self, rgb: npt.NDArray[np.float32]) -> Any: ...
    def from_model_space(self, x: Any) -> Any: ...
    def clip(self, x: Any) -> Any: ...
    def step(self, x: Any, layer_weights: Mapping[str, float] | None = None, *,
             channel_weights: Any = None,
             guide: Mapping[str, Any] | None = None) -> tuple[Any, float]: ...
    def features(self, x: Any) -> dict[str, Any]: ...


@dataclass(frozen=True, slots=True)
class DreamParams:
    """How to dream. ``layer_weights=None`` means the model's own default layers."""

    layer_weights: Mapping[str, float] | None = None
    channels: Mapping[str, Sequence[int]] = field(default_factory=dict)
    step: float = 1.5
    octaves: int = 4
    octave_scale: float = 1.4
    steps_per_octave: int = 10
    jitter: int = 32
    tile: int = 512

    @classmethod
    def from_recipe(cls, recipe: DreamRecipe, *, jitter: int = 32, tile: int = 512) -> DreamParams:
        return cls(layer_weights=dict(recipe.layer_weights) or None,
                   channels={k: tuple(v) for k, v in recipe.channels.items()},
                   step=recipe.step, octaves=max(1, recipe.octaves),
                   octave_scale=recipe.octave_scale,
                   steps_per_octave=max(1, recipe.steps_per_octave), jitter=jitter, tile=tile)


def model_min_size(model: object) -> tuple[int, int]:
    """The smallest (height, width) ``model``'s step accepts (``DreamModel.min_size``; (1, 1)
    for a step model that does not say)."""
    size = getattr(model, "min_size", (1, 1))
    return int(size[0]), int(size[1])


OCTAVE_BUCKET_PX = 16
"""the live renderer rounds the octaves below full size to multiples of this many pixels, so a
slider sweeping ``octave_scale`` (OSC, MQTT) lands on a few fixed image shapes instead of a new
one at every value: onnxruntime plans memory per input shape, and cuDNN (with
``cudnn_conv_algo_search = EXHAUSTIVE``) tunes its convolutions per shape"""


def octave_sizes(width: int, height: int, octaves: int, scale: float,
                 min_size: tuple[int, int] = (1, 1), *, bucket: int = 1) -> list[tuple[int, int]]:
    """(width, height) per octave, full size first. Octaves smaller than 48 px, or than the
    model's ``min_size`` (height, width), are dropped; the full size is always kept (the
    gradient pads a too-small image, see :func:`tiled_gradient`). ``bucket`` > 1 rounds the
    smaller octaves to multiples of ``bucket`` pixels (see ``OCTAVE_BUCKET_PX``)."""
    if not (math.isfinite(scale) and scale > 1.0):
        raise RenderError(f"octave_scale must be a finite number above 1, got {scale!r}",
                          hint="octave_scale is the growth from one octave to the next, e.g. 1.4")
    sizes = [(width, height)]
    for i in range(1, max(1, octaves)):
        w, h = round(width / scale ** i), round(height / scale ** i)
        if bucket > 1:
            w, h = bucket * max(1, round(w / bucket)), bucket * max(1, round(h / bucket))
        if min(w, h) < MIN_OCTAVE_SIDE or h < min_size[0] or w < min_size[1]:
            break
        sizes.append((w, h))
    return sizes


def tile_edges(length: int, tile: int) -> list[tuple[int, int]]:
    """Split ``length`` into near-equal spans no longer than ``tile`` (one span when tile <= 0)."""
    if tile <= 0 or length <= tile:
        return [(0, length)]
    n = -(-length // tile)
    cuts = np.linspace(0, length, n + 1).round().astype(int)
    return [(int(a), int(b)) for a, b in itertools.pairwise(cuts.tolist())]


def _grad(model: StepModel, x: Tensor, params: DreamParams,
          guide: Mapping[str, Any] | None) -> tuple[Tensor, float]:
    channel_weights = dict(params.channels) if params.channels else None
    h, w = x.shape[2], x.shape[3]
    mh, mw = model_min_size(model)
    if h < mh or w < mw:
        # mirror-pad up to the model's minimum, then keep the gradient of the real pixels only
        ph, pw = max(0, mh - h), max(0, mw - w)
        xp = np.pad(x, ((0, 0), (0, 0), (ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2)), mode="symmetric")
        g, loss = model.step(xp, params.layer_weights, channel_weights=channel_weights, guide=guide)
        gc = np.asarray(g, dtype=np.float32)[:, :, ph // 2:ph // 2 + h, pw // 2:pw // 2 + w]
        return np.ascontiguousarray(gc), float(loss)
    g, loss = model.step(x, params.layer_weights, channel_weights=channel_weights, guide=guide)
    return np.asarray(g, dtype=np.float32), float(loss)


def tiled_gradient(model: StepModel, x: Tensor, params: DreamParams,
                   guide: Mapping[str, Any] | None = None) -> tuple[Tensor, float]:
    """The objective's gradient over ``x`` (1, 3, H, W), tile by tile; losses are summed. A tile
    or image smaller than the model's ``min_size`` is mirror-padded up to it for the step and
    only its own pixels' gradient is kept, so no size makes onnxruntime fail."""
    h, w = x.shape[2], x.shape[3]
    ys, xs = tile_edges(h, params.tile), tile_edges(w, params.tile)
    if len(ys) == 1 and len(xs) == 1:
        return _grad(model, x, params, guide)
    g = np.zeros_like(x)
    total = 0.0
    for y0, y1 in ys:
        for x0, x1 in xs:
            gt, loss = _grad(model, np.ascontiguousarray(x[:, :, y0:y1, x0:x1]), params, guide)
            g[:, :, y0:y1, x0:x1] = gt
            total += loss
    return g, total


def jitter_shift(rng: np.random.Generator, h: int, w: int, jitter: int) -> tuple[int, int]:
    """The roll (dy, dx) of one step: up to ``jitter`` pixels, and at most half the frame."""
    jy = min(jitter, h // 2)
    jx = min(jitter, w // 2)
    oy = int(rng.integers(-jy, jy + 1)) if jy > 0 else 0
    ox = int(rng.integers(-jx, jx + 1)) if jx > 0 else 0
    return oy, ox


def ascent_step(model: StepModel, x: Tensor, params: DreamParams, *,
                mask: Mask | None = None, guide: Mapping[str, Any] | None = None,
                rng: np.random.Generator) -> tuple[Tensor, float]:
    """One jittered, normalised gradient-ascent step on ``x`` (model space); returns (x, loss)."""
    oy, ox = jitter_shift(rng, x.shape[2], x.shape[3], params.jitter)
    xr = np.roll(x, (oy, ox), axis=(2, 3)) if (oy or ox) else x
    g, loss = tiled_gradient(model, xr, params, guide)
    if oy or ox:
        g = np.roll(g, (-oy, -ox), axis=(2, 3))
    x = ascent_update(x, g, step=params.step, pixel_scale=model.pixel_scale, mask=mask)
    out: Tensor = np.asarray(model.clip(x), dtype=np.float32)
    return out, loss


class AscentModel(StepModel, Protocol):
    """A step model that also runs whole ascents in one call (``DreamModel.ascend``: the fused
    graph, the frame kept on the device between steps)."""

    def ascend(self, x: Any, shifts: Sequence[tuple[int, int]], *, step: float, mask: Any = None,
               layer_weights: Mapping[str, float] | None = None, channel_weights: Any = None,
               guide: Mapping[str, Any] | None = None,
               on_step: Callable[[], None] | None = None) -> tuple[Any, list[float]]: ...


def fused_model(model: StepModel, h: int, w: int, params: DreamParams) -> AscentModel | None:
    """``model`` when its own class has ``ascend``, it prefers it (``DreamModel.prefer_fused``:
    on CUDA) and an (h, w) frame needs neither tiles nor padding, so the fused ascent applies;
    else None (the numpy step loop). A wrapper that only forwards attributes (``__getattr__``)
    keeps the numpy loop, and with it its own ``step``."""
    if not callable(getattr(type(model), "ascend", None)) or not getattr(model, "prefer_fused", False):
        return None
    mh, mw = model_min_size(model)
    if h < mh or w < mw or len(tile_edges(h, params.tile)) > 1 or len(tile_edges(w, params.tile)) > 1:
        return None
    return cast("AscentModel", model)


def ascend_steps(model: StepModel, x: Tensor, params: DreamParams, steps: int, *,
                 mask: Mask | None = None, guide: Mapping[str, Any] | None = None,
                 rng: np.random.Generator,
                 on_step: Callable[[], None] | None = None) -> tuple[Tensor, float]:
    """``steps`` ascent steps on ``x``: in one ``ascend`` call where :func:`fused_model` allows,
    else ``ascent_step`` by ``ascent_step``. Both draw the same jitter from ``rng``, so a seed
    gives the same shifts either way. Returns (x, the last step's loss)."""
    fused = fused_model(model, x.shape[2], x.shape[3], params)
    if fused is not None and steps > 0:
        shifts = [jitter_shift(rng, x.shape[2], x.shape[3], params.jitter) for _ in range(steps)]
        out, losses = fused.ascend(x, shifts, step=params.step, mask=mask, layer_weights=params.layer_weights,
                                   channel_weights=dict(params.channels) if params.channels else None,
                                   guide=guide, on_step=on_step)
        return np.asarray(out, dtype=np.float32), losses[-1]
    loss = 0.0
    for _ in range(steps):
        x, loss = ascent_step(model, x, params, mask=mask, guide=guide, rng=rng)
        if on_step is not None:
            on_step()
    return x, loss


def guide_features(model: StepModel, guide_rgb: RGB, *, max_side: int = 512) -> dict[str, Any]:
    """Layer features of a guide image (shrunk to at most ``max_side``), for ``step(guide=)``."""
    h, w = guide_rgb.shape[:2]
    s = min(1.0, max_side / max(h, w))
    if s < 1.0:
        guide_rgb = resize(guide_rgb, (max(1, round(w * s)), max(1, round(h * s))))
    feats = model.features(model.to_model_space(guide_rgb))
    return {k: v for k, v in feats.items() if k in model.layers}


def composite(src: RGB, out: RGB, mask: Mask | None) -> RGB:
    """``src + mask * (out - src)``: exactly ``src`` where the mask is 0."""
    if mask is None:
        return out
    m = fit_mask(mask, src.shape[0], src.shape[1], warn=False)[..., None]
    res: RGB = np.where(m > 0, src + m * (out - src), src).astype(np.float32)
    return res


def dream_image(model: StepModel, rgb: RGB, params: DreamParams, *, mask: Mask | None = None,
                guide: Mapping[str, Any] | None = None, seed: int | None = 0,
                progress: Progress | None = None) -> RGB:
    """Dream over a still; returns float32 RGB [0, 1] the same size as ``rgb``."""
    rng = np.random.default_rng(seed)
    h, w = rgb.shape[:2]
    mh, mw = model_min_size(model)
    if h < mh or w < mw:
        grow = max(mh / h, mw / w)
        big = (max(mw, math.ceil(w * grow)), max(mh, math.ceil(h * grow)))
        log.warning("image is smaller than the model accepts; dreaming it upscaled and scaling the result back",
                    extra={"image": f"{w}x{h}", "model": model.name, "minimum": f"{mw}x{mh}",
                           "dreamed_at": f"{big[0]}x{big[1]}",
                           "fix": f"use an image of at least {mw}x{mh} px for a sharper dream"})
        big_mask = fit_mask(mask, big[1], big[0], warn=False) if mask is not None else None
        out_big = dream_image(model, resize(rgb, big), params, mask=big_mask, guide=guide, seed=seed,
                              progress=progress)
        return composite(rgb, resize(out_big, (w, h)), fit_mask(mask, h, w) if mask is not None else None)
    if mask is not None:
        mask = fit_mask(mask, h, w)
    sizes = octave_sizes(w, h, params.octaves, params.octave_scale, model_min_size(model))
    bases = [rgb]
    for size in sizes[1:]:
        bases.append(resize(bases[-1], size))
    total = len(sizes) * params.steps_per_octave
    done = 0
    detail: Tensor | None = None
    x = np.asarray(model.to_model_space(bases[-1]), dtype=np.float32)
    for base in reversed(bases):
        bh, bw = base.shape[:2]
        xb = np.asarray(model.to_model_space(base), dtype=np.float32)
        if detail is not None:
            d = resize(np.ascontiguousarray(detail[0].transpose(1, 2, 0)), (bw, bh))
            xb_plus = xb + d.transpose(2, 0, 1)[None]
        else:
            xb_plus = xb
        x = np.asarray(model.clip(np.array(xb_plus, dtype=np.float32)), dtype=np.float32)
        m = fit_mask(mask, bh, bw, warn=False) if mask is not None else None

        def stepped() -> None:
            nonlocal done
            done += 1
            if progress is not None:
                progress(done, total)

        x, _loss = ascend_steps(model, x, params, params.steps_per_octave, mask=m, guide=guide, rng=rng,
                                on_step=stepped)
        detail = x - xb
    out = np.clip(np.asarray(model.from_model_space(x), dtype=np.float32), 0.0, 1.0)
    return composite(rgb, out, mask)


def dream_octave(model: StepModel, rgb: RGB, params: DreamParams, octave: int, *,
                 steps: int = 1, mask: Mask | None = None,
                 guide: Mapping[str, Any] | None = None,
                 rng: np.random.Generator) -> tuple[RGB, float]:
    """Real-time variant: ``steps`` steps at one octave (0 = full size), detail added back at
    full size. The octaves below full size are bucketed to ``OCTAVE_BUCKET_PX``. Returns (new
    RGB, last loss)."""
    h, w = rgb.shape[:2]
    sizes = octave_sizes(w, h, params.octaves, params.octave_scale, model_min_size(model), bucket=OCTAVE_BUCKET_PX)
    ow, oh = sizes[min(octave, len(sizes) - 1)]
    small = resize(rgb, (ow, oh))
    x0 = np.asarray(model.to_model_space(small), dtype=np.float32)
    m = fit_mask(mask, oh, ow, warn=False) if mask is not None else None
    x, loss = ascend_steps(model, x0, params, steps, mask=m, guide=guide, rng=rng)
    delta = np.asarray(model.from_model_space(x), dtype=np.float32) - \
        np.asarray(model.from_model_space(x0), dtype=np.float32)
    if (ow, oh) != (w, h):
        delta = resize(np.ascontiguousarray(delta), (w, h))
    out = np.clip(rgb + delta, 0.0, 1.0).astype(np.float32)
    return composite(rgb, out, mask), loss
