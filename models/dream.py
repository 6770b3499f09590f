"""The runtime face of the models area: a compiled dream step in an onnxruntime session.

Lifecycle of :class:`DreamModel`:

- ``DreamModel.load(...)`` resolves the model (registry name or path), compiles the dream-step
  graph (or takes it from the cache), and opens the session. After it returns, ``step`` and
  ``features`` can be called from one thread at a time per instance (onnxruntime releases the
  GIL while it runs); ``provider`` says where it runs.
- ``step`` never changes the model; it returns a new gradient array each call.
- ``ascend`` runs a whole run of ascent steps in the fused ascent graph (built, or read from the
  cache, on its first call, with its own session on the same provider), chained with IOBinding
  so the frame stays on the device; ``step_runs``, ``ascent_runs`` and ``ascent_frames_back``
  count what ran.

Pixel spaces: the renderer works in RGB [0, 1] (H, W, 3). ``to_model_space`` maps that to the
model's input (1, C, H, W): scale to ``value_range`` (e.g. 0..255), subtract the mean, divide by
std, reorder to BGR where the model wants it. ``value_range`` is that pixel range *before*
mean/std; ``clip`` clips a model-space image to it (per channel, after the mean/std mapping).
``min_size`` is the smallest (height, width) in pixels the step accepts: every tensor it needs
keeps at least one pixel (``models.graph.min_input_size``, from the strides, kernels and pads);
the renderer keeps octaves, tiles and images at or above it.

``pixel_scale`` is the model-space change of one display level (1/255 of the shown range) per
input channel, ``scale / (255 * std_c)``: the renderer uses it to make ``step`` mean the same
change on screen for every model, whatever its range, mean, std or channel order.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from dreamstate.engine.core.errors import ModelError
from dreamstate.models.backward import Lowering
from dreamstate.models.registry import ModelSpec, Preprocess

log = logging.getLogger("dreamstate.models")


@dataclass(frozen=True)
class CompiledStep:
    """A dream step compiled (or taken from the cache): its ONNX bytes and where they live."""

    spec: ModelSpec
    forward: Any
    layers: tuple[str, ...]
    tensors: tuple[str, ...]
    data: bytes
    path: Path


def compile_cached(model: str | Path, layers: Sequence[str] | None = None, *,
                   objective: Literal["layers", "channels", "class"] = "layers", guide: bool = False,
                   cache_dir: Path | None = None, precision: str = "fp32", ascent: bool = False) -> CompiledStep:
    """Resolve ``model``, compile its dream step for ``layers`` (default: the recommended ones)
    or take it from the cache, and return it without opening a session. ``dreamstate check``
    calls this, so a model ``run`` could not dream is refused before the show starts.
    ``precision``: ``fp32`` or ``fp16`` (``models.precision``; float32 inputs and outputs either way).
    ``ascent=True``: the fused ascent graph (``compiler.compile_ascent``) instead of the step,
    cached beside it under its own key.
    Raises ``ModelError`` (unsupported op, unknown layer, unreadable file) naming the cause."""
    from dreamstate.models import cache, compiler, registry
    from dreamstate.models import precision as fp
    from dreamstate.models.graph import load_forward

    path, spec = registry.resolve(model)
    fg = load_forward(path, label=str(path))
    if layers is None or len(layers) == 0:
        # "logits": the tensor named so, else the input of the final Softmax (graph alias)
        layers = ["logits"] if objective == "class" else list(spec.layers)
    if not layers:
        raise ModelError(
            f"no dream layers given for model {spec.name!r} and it has no recommended layers",
            hint="pass layers=[...] (see `dreamstate models layers MODEL`)",
        )
    names = tuple(str(n) for n in layers)
    tensors = tuple(fg.resolve_layer(n) for n in names)
    key = cache.cache_key(
        fg.sha256,
        tensors,
        objective=objective,
        guide=guide,
        compiler=compiler.COMPILER_VERSION,
        variant=Lowering().key() + fp.cache_variant(fp.check_precision(precision))
        + (f"|ascent{compiler.ASCENT_VERSION}" if ascent else ""),
    )
    step_path = cache.cached_path(spec.name, key, cache_dir)
    data: bytes | None = None
    if step_path.exists():
        data = step_path.read_bytes()
        log.info("compiled step from cache", extra={"file": str(step_path)})
    if data is None:
        data = fp.compile_bytes(fg, tensors, objective=objective, guide=guide, precision=fp.check_precision(precision),
                                ascent=ascent)
        try:
            cache.write_atomic(step_path, data)
        except OSError as exc:
            log.warning("cannot write the compiled-graph cache", extra={"file": str(step_path), "error": str(exc)})
    return CompiledStep(spec, fg, names, tensors, data, step_path)


def ascent_update(x: np.ndarray, g: np.ndarray, *, step: float, pixel_scale: np.ndarray,
                  mask: np.ndarray | None = None) -> np.ndarray:
    """The normalised ascent update of model-space ``x`` by its gradient ``g`` (not clipped):
    ``x + (step / mean|g_p|) * g_p * s`` with ``g_p = g * s`` the gradient in display units
    (``s``: ``pixel_scale``, per channel) and the mean over the pixels where ``mask`` > 0 (``g_p``
    weighted by the mask); ``x`` unchanged when that mean is 0 or not finite. The renderer's
    numpy step and ``DreamModel.ascend``'s fallback use this; ``compiler.compile_ascent`` is
    the same in-graph."""
    ps = np.asarray(pixel_scale, dtype=np.float32)
    uniform = bool(np.all(ps == ps.flat[0]))
    if not uniform:
        g = g * ps  # the gradient in display units (per channel)
    if mask is not None:
        g = g * mask[None, None]
        active = mask > 0
        denom = float(np.abs(g[:, :, active]).mean()) if active.any() else 0.0
    else:
        denom = float(np.abs(g).mean())
    if denom > 0 and np.isfinite(denom):
        # dx = step * g_p * s / mean|g_p|; with one s for all channels, g_p = s * g cancels in
        # the ratio, so g stays unscaled (and denom is mean|g|): dx = step * s * g / mean|g|
        x = x + (step / denom) * (g * (float(ps.flat[0]) if uniform else ps))
    return x


class DreamModel:
    """A loaded dream step (see the module docstring for the lifecycle)."""

    def __init__(
        self,
        *,
        name: str,
        layers: tuple[str, ...],
        tensors: tuple[str, ...],
        channels: tuple[int | None, ...],
        objective: str,
        guide: bool,
        session: Any,
        provider: str,
        spec: ModelSpec,
        image_input: str,
        forward: Any,
        device: Literal["auto", "cpu", "cuda"],
        threads: int | None,
        step_path: Path | None,
        source: str | Path | None = None,
        cache_dir: Path | None = None,
        conv_algo_search: str = "HEURISTIC",
    ) -> None:
        self.name = name
        self.layers = layers
        self.tensors = tensors
        self.channels = channels
        self.objective = objective
        self.guide = guide
        self.provider = provider
        self.spec = spec
        self.step_path = step_path
        self.precision = "fp32"
        """``fp32`` or ``fp16``: the precision the step runs in (fp16 only on CUDA)."""
        self._session = session
        self._image = image_input
        self._forward = forward
        self._device = device
        self._threads = threads
        self._features_session: Any = None
        self._source = source
        self._cache_dir = cache_dir
        self._conv_algo_search = conv_algo_search
        self._ascent_session: Any = None
        self._ascent_error: str | None = None  # why the fused ascent is off (said once)
        self.step_runs = 0  # step() calls: one frame host -> device -> host each
        self.ascent_runs = 0  # fused ascent steps run with IOBinding
        self.ascent_frames_back = 0  # frames copied back to the host by ascend() (one per call)
        self.prefer_fused: bool = provider.startswith("CUDA")
        """Whether the renderer (``engine.render.dream.fused_model``) hands runs of steps to
        ``ascend``: on where the session runs on CUDA, where the fused graph saves a transfer each
        way and a sync per step; off on the CPU, where it measured 0-6 % slower than the numpy
        loop (docs/BENCHMARKS.md) and would cost a second session. ``ascend`` works either way."""
        from dreamstate.models.graph import min_input_size

        self.min_size: tuple[int, int] = min_input_size(forward, tensors) if forward is not None else (1, 1)
        pre = spec.preprocess
        self.value_range: tuple[float, float] = (0.0, float(pre.scale))
        self._pre = pre
        order = [2, 1, 0] if pre.bgr else [0, 1, 2]
        c = pre.channels
        mean = np.asarray(pre.mean, np.float32)[order][:c] if c == 3 else np.asarray(pre.mean[:1], np.float32)
        std = np.asarray(pre.std, np.float32)[order][:c] if c == 3 else np.asarray(pre.std[:1], np.float32)
        self._mean = mean.reshape(1, -1, 1, 1)
        self._std = std.reshape(1, -1, 1, 1)
        self.pixel_scale: np.ndarray = (np.float32(pre.scale) / (np.float32(255.0) * self._std)).astype(np.float32)
        self._lo = ((0.0 - self._mean) / self._std).astype(np.float32)
        self._hi = ((pre.scale - self._mean) / self._std).astype(np.float32)
        index: dict[str, int] = {}
        for i, (n, t) in enumerate(zip(layers, tensors, strict=True)):
            index[n] = i
            index[t] = i
        self._index = index

    # ------------------------------------------------------------------ construction
    @classmethod
    def load(
        cls,
        model: str | Path,
        layers: Sequence[str] | None = None,
        *,
        objective: Literal["layers", "channels", "class"] = "layers",
        guide: bool = False,
        device: Literal["auto", "cpu", "cuda"] = "auto",
        threads: int | None = None,
        cache_dir: Path | None = None,
        conv_algo_search: str = "HEURISTIC",
        precision: str = "fp32",
    ) -> DreamModel:
        from dreamstate.models import cache
        from dreamstate.models import precision as fp
        from dreamstate.models.session import CUDA, cuda_missing, make_session

        if device == "cuda" and (missing := cuda_missing()) is not None:
            raise missing  # before the cache: a missing provider is not a corrupt cache entry
        precision = fp.runnable_precision(precision, device)  # fp16 only where CUDA may run it
        compiled = compile_cached(model, layers, objective=objective, guide=guide, cache_dir=cache_dir,
                                  precision=precision)
        fg, spec, names, tensors, data, step_path = (compiled.forward, compiled.spec, compiled.layers,
                                                     compiled.tensors, compiled.data, compiled.path)
        try:
            session, provider = make_session(data, device=device, threads=threads, what=f"{spec.name} step",
                                             conv_algo_search=conv_algo_search)
        except ModelError:
            if step_path.exists():
                step_path.unlink(missing_ok=True)  # a stale/corrupt cache entry: recompile once
                data = fp.compile_bytes(fg, tensors, objective=objective, guide=guide,
                                        precision=fp.check_precision(precision))
                cache.write_atomic(step_path, data)
                session, provider = make_session(data, device=device, threads=threads, what=f"{spec.name} step",
                                                 conv_algo_search=conv_algo_search)
            else:
                raise
        if precision == "fp16" and provider != CUDA:  # auto: CUDA failed to load, the CPU runs it
            log.warning("precision fp16 needs CUDA and the CUDA session did not start: the dream runs in fp32 "
                        "(fix: check the CUDA install, or set [output] precision = \"fp32\")")
            precision = "fp32"
            fp32 = compile_cached(model, layers, objective=objective, guide=guide, cache_dir=cache_dir)
            step_path = fp32.path
            session, provider = make_session(fp32.data, device="cpu", threads=threads, what=f"{spec.name} step")
        channels = tuple(
            (s[1] if s and len(s) > 1 and isinstance(s[1], int) else None) for s in (fg.shapes.get(t) for t in tensors)
        )
        loaded = cls(
            name=spec.name,
            layers=names,
            tensors=tensors,
            channels=channels,
            objective=objective,
            guide=guide,
            session=session,
            provider=provider,
            spec=spec,
            image_input=fg.image,
            forward=fg,
            device=device,
            threads=threads,
            step_path=step_path,
            source=model,
            cache_dir=cache_dir,
            conv_algo_search=conv_algo_search,
        )
        loaded.precision = precision
        return loaded

    # ------------------------------------------------------------------ pixel spaces
    @property
    def preprocess(self) -> Preprocess:
        return self._pre

    def to_model_space(self, rgb: np.ndarray) -> np.ndarray:
        """(H, W, 3) float RGB in [0, 1] -> (1, C, H, W) float32 model input."""
        a = np.asarray(rgb, dtype=np.float32)
        if a.ndim != 3 or a.shape[2] != 3:
            raise ModelError(f"expected an (H, W, 3) RGB image, got shape {a.shape}", hint="convert the frame to RGB")
        if self._pre.channels == 1:
            a = (a @ np.asarray([0.299, 0.587, 0.114], np.float32))[:, :, None]
        elif self._pre.bgr:
            a = a[:, :, ::-1]
        x = np.ascontiguousarray(a.transpose(2, 0, 1)[None]) * np.float32(self._pre.scale)
        return ((x - self._mean) / self._std).astype(np.float32)

    def from_model_space(self, x: np.ndarray) -> np.ndarray:
        """(1, C, H, W) model input -> (H, W, 3) float32 RGB (not clipped)."""
        v = (np.asarray(x, np.float32) * self._std + self._mean) / np.float32(self._pre.scale)
        img = v[0].transpose(1, 2, 0)
        if self._pre.channels == 1:
            img = np.repeat(img, 3, axis=2)
        elif self._pre.bgr:
            img = img[:, :, ::-1]
        return np.ascontiguousarray(img, dtype=np.float32)

    def clip(self, x: np.ndarray) -> np.ndarray:
        """Clip a model-space image to the valid pixel range (in place when x is float32)."""
        return np.clip(x, self._lo, self._hi, out=x if x.dtype == np.float32 else None)

    # ------------------------------------------------------------------ running
    def _layer_index(self, name: str) -> int:
        try:
            return self._index[name]
        except KeyError:
            raise ModelError(
                f"layer {name!r} is not compiled into this dream step of {self.name}",
                hint=f"use one of the compiled layers {list(self.layers)} or load the model with it",
            ) from None

    def layer_vector(self, layer_weights: Mapping[str, float] | None) -> np.ndarray:
        """Weights in compiled order; None = 1 for every layer, unnamed layers get 0."""
        if layer_weights is None:
            return np.ones(len(self.layers), np.float32)
        vec = np.zeros(len(self.layers), np.float32)
        for name, w in layer_weights.items():
            vec[self._layer_index(name)] = float(w)
        return vec

    def _check_image(self, x: np.ndarray) -> np.ndarray:
        if x.ndim != 4:
            raise ModelError(f"dream step needs a (N, C, H, W) image, got shape {x.shape}", hint="use to_model_space()")
        return np.ascontiguousarray(x, dtype=np.float32)

    def step(
        self,
        x: np.ndarray,
        layer_weights: Mapping[str, float] | None = None,
        *,
        channel_weights: Mapping[str, np.ndarray] | None = None,
        guide: Mapping[str, np.ndarray] | None = None,
    ) -> tuple[np.ndarray, float]:
        """One forward+backward: returns (d loss / d x with x's shape, loss)."""
        feed = {self._image: self._check_image(x),
                **self._objective_feed(layer_weights, channel_weights=channel_weights, guide=guide)}
        grad, loss = self._session.run(["grad", "loss"], feed)
        self.step_runs += 1
        return grad, float(loss)

    def _objective_feed(
        self,
        layer_weights: Mapping[str, float] | None,
        *,
        channel_weights: Mapping[str, np.ndarray] | None,
        guide: Mapping[str, np.ndarray] | None,
    ) -> dict[str, np.ndarray]:
        """The step's inputs besides the image (the ascent graph takes the same ones)."""
        feed: dict[str, np.ndarray] = {"layer_weights": self.layer_vector(layer_weights)}
        if self.objective in ("channels", "class") and not self.guide:
            given = {
                self._layer_index(k): np.asarray(v, np.float32).reshape(-1) for k, v in (channel_weights or {}).items()
            }
            for i, ch in enumerate(self.channels):
                vec = given.get(i)
                if vec is None:
                    if ch is None:
                        raise ModelError(
                            f"layer {self.layers[i]!r} needs channel weights (channel count unknown)",
                            hint="pass channel_weights",
                        )
                    vec = np.ones(ch, np.float32)
                elif ch is not None and vec.shape[0] != ch:
                    raise ModelError(
                        f"channel weights for layer {self.layers[i]!r} have {vec.shape[0]} values, "
                        f"the layer has {ch} channels",
                        hint=f"pass a vector of length {ch}",
                    )
                feed[f"channel_weights_{i}"] = vec
        elif channel_weights:
            raise ModelError(
                f"channel weights given, but this step was compiled with objective {self.objective!r}",
                hint="load the model with objective='channels'",
            )
        if self.guide:
            if not guide:
                raise ModelError(
                    "this dream step was compiled for a guide image; no guide features given",
                    hint="pass guide=model.features(guide_image)",
                )
            got = {self._layer_index(k): np.asarray(v, np.float32) for k, v in guide.items()}
            for i in range(len(self.layers)):
                if i not in got:
                    raise ModelError(
                        f"guide features for layer {self.layers[i]!r} missing",
                        hint="pass guide=model.features(guide_image)",
                    )
                g = got[i]
                feed[f"guide_{i}"] = g if g.ndim == 4 else g[None]
        elif guide:
            raise ModelError(
                "guide features given, but this step was compiled without a guide", hint="load with guide=True"
            )
        return feed

    def features(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """Activations of the compiled layers for image ``x`` (keys: the layer names)."""
        if self._features_session is None:
            from dreamstate.models.compiler import forward_features_model
            from dreamstate.models.session import make_session

            proto = forward_features_model(self._forward, self.tensors)
            device: Literal["auto", "cpu", "cuda"] = "cuda" if self.provider.startswith("CUDA") else "cpu"
            self._features_session, _ = make_session(
                proto.SerializeToString(), device=device, threads=self._threads, what=f"{self.name} features"
            )
        outs = self._features_session.run(list(self.tensors), {self._image: self._check_image(x)})
        return {n: o for n, o in zip(self.layers, outs, strict=True)}

    # ------------------------------------------------------------------ fused ascent
    def _ascent(self) -> Any:
        """The fused ascent session, built (or read from the cache) on first use; None when it
        cannot be, after one warning that names the model and the reason."""
        if self._ascent_session is not None or self._ascent_error is not None:
            return self._ascent_session
        from dreamstate.models.session import make_session

        try:
            if self._source is None:
                raise ModelError("the model was not loaded from a file (DreamModel.load)", hint="load it so")
            objective: Literal["layers", "channels", "class"] = (
                "channels" if self.objective == "channels" else "class" if self.objective == "class" else "layers")
            compiled = compile_cached(self._source, list(self.tensors), objective=objective, guide=self.guide,
                                      cache_dir=self._cache_dir, ascent=True, precision=self.precision)
            device: Literal["auto", "cpu", "cuda"] = "cuda" if self.provider.startswith("CUDA") else "cpu"
            self._ascent_session, _ = make_session(compiled.data, device=device, threads=self._threads,
                                                   what=f"{self.name} ascent",
                                                   conv_algo_search=self._conv_algo_search)
        except ModelError as exc:
            self._ascent_error = str(exc)
            log.warning("fused ascent unavailable for this model: it dreams with the numpy step loop",
                        extra={"model": self.name, "reason": self._ascent_error})
            return None
        return self._ascent_session

    @property
    def fused(self) -> bool:
        """Whether ``ascend`` runs the fused graph (builds it on first ask; False after the one
        warning when it cannot)."""
        return self._ascent() is not None

    def ascend(
        self,
        x: np.ndarray,
        shifts: Sequence[tuple[int, int]],
        *,
        step: float,
        mask: np.ndarray | None = None,
        layer_weights: Mapping[str, float] | None = None,
        channel_weights: Mapping[str, np.ndarray] | None = None,
        guide: Mapping[str, np.ndarray] | None = None,
        on_step: Callable[[], None] | None = None,
    ) -> tuple[np.ndarray, list[float]]:
        """``len(shifts)`` jittered, normalised ascent steps on model-space ``x`` (1, C, H, W);
        returns (the clipped result, each step's loss). Step k rolls by ``shifts[k]`` = (dy, dx)
        before its gradient and back after; ``step`` is in display levels, ``mask`` (H, W)
        weights the gradient (``ascent_update``).

        The fused ascent graph runs every step with onnxruntime IOBinding: two frame buffers on
        the session's device ('cuda' on the CUDA provider, else 'cpu') take turns as input and
        output, so the frame crosses to the device once and only the final frame comes back
        (the losses stay there as scalars until the end). When the fused graph cannot be built
        for this model, the same steps run as ``step`` + numpy (one warning says why).
        ``on_step`` is called after each step. ``x`` is not changed."""
        x = self._check_image(x)
        h, w = x.shape[2], x.shape[3]
        if h < self.min_size[0] or w < self.min_size[1]:
            raise ModelError(f"{self.name} needs at least {self.min_size[1]}x{self.min_size[0]} px, got {w}x{h}",
                             hint="pad the frame (the renderer's tiled_gradient does) or dream it larger")
        if mask is not None and np.shape(mask) != (h, w):
            raise ModelError(f"mask shape {np.shape(mask)} is not the frame's {(h, w)}", hint="fit the mask first")
        feed = self._objective_feed(layer_weights, channel_weights=channel_weights, guide=guide)
        session = self._ascent()
        if session is None:
            return self._ascend_numpy(x, shifts, step=step, mask=mask, feed=feed, on_step=on_step)
        return self._ascend_fused(session, x, shifts, step=step, mask=mask, feed=feed, on_step=on_step)

    def _ascend_numpy(self, x: np.ndarray, shifts: Sequence[tuple[int, int]], *, step: float,
                      mask: np.ndarray | None, feed: dict[str, np.ndarray],
                      on_step: Callable[[], None] | None) -> tuple[np.ndarray, list[float]]:
        losses: list[float] = []
        for dy, dx in shifts:
            xr = np.roll(x, (dy, dx), axis=(2, 3)) if (dy or dx) else x
            g, loss = self._session.run(["grad", "loss"], {self._image: np.ascontiguousarray(xr), **feed})
            self.step_runs += 1
            if dy or dx:
                g = np.roll(g, (-dy, -dx), axis=(2, 3))
            x = self.clip(np.asarray(ascent_update(x, g, step=step, pixel_scale=self.pixel_scale, mask=mask),
                                     dtype=np.float32))
            losses.append(float(loss))
            if on_step is not None:
                on_step()
        return x, losses

    def _ascend_fused(self, session: Any, x: np.ndarray, shifts: Sequence[tuple[int, int]], *, step: float,
                      mask: np.ndarray | None, feed: dict[str, np.ndarray],
                      on_step: Callable[[], None] | None) -> tuple[np.ndarray, list[float]]:
        import onnxruntime as ort

        device = "cuda" if self.provider.startswith("CUDA") else "cpu"
        h, w = x.shape[2], x.shape[3]
        ps = np.asarray(self.pixel_scale, np.float32).reshape(1, -1, 1, 1)
        uniform = bool(np.all(ps == ps.flat[0]))
        consts: dict[str, np.ndarray] = {
            "ascent_step": np.asarray(step, np.float32),
            "ascent_mask": np.ones((h, w), np.float32) if mask is None else np.ascontiguousarray(mask, np.float32),
            # as ascent_update: one scale for every channel cancels in the ratio (grad scale 1)
            "ascent_grad_scale": np.ones_like(ps) if uniform else ps,
            "ascent_update_scale": ps,
            "ascent_lo": self._lo,
            "ascent_hi": self._hi,
            **feed,
        }
        binding = session.io_binding()
        keep = []  # the bound values must outlive the runs
        for name, arr in consts.items():
            value = ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(arr), device, 0)
            keep.append(value)
            binding.bind_ortvalue_input(name, value)
        # a copy: on the CPU an OrtValue wraps the numpy memory, and the buffers are written
        cur = ort.OrtValue.ortvalue_from_numpy(np.array(x, dtype=np.float32, copy=True), device, 0)
        nxt = ort.OrtValue.ortvalue_from_shape_and_type(list(x.shape), np.float32, device, 0)
        losses = [ort.OrtValue.ortvalue_from_shape_and_type([], np.float32, device, 0) for _ in shifts]
        for k, (dy, dx) in enumerate(shifts):
            shift = ort.OrtValue.ortvalue_from_numpy(np.asarray([dy, dx], np.int64), "cpu", 0)
            binding.bind_ortvalue_input("ascent_shift", shift)
            binding.bind_ortvalue_input("ascent_x", cur)
            binding.bind_ortvalue_output("x_next", nxt)
            binding.bind_ortvalue_output("loss", losses[k])
            session.run_with_iobinding(binding)
            self.ascent_runs += 1
            cur, nxt = nxt, cur
            if on_step is not None:
                on_step()
        out = np.array(cur.numpy(), dtype=np.float32, copy=True)  # the one frame back to the host
        self.ascent_frames_back += 1
        return out, [float(v.numpy()) for v in losses]
