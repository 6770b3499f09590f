"""Plain classifier scoring: a batch of RGB images in, class logits out, in one onnxruntime call.

The drawing mode (``engine.render.drawing``) scores candidate drawings with this. The graph is
the model's own forward pass up to its logits, taken by the dream compiler's loader
(``models.graph.load_forward`` makes the batch, height and width symbolic; the logits are the
tensor named ``logits``, else the input of the final Softmax) and cut there by
``models.compiler.forward_features_model``, so the batch dimension N is symbolic and
:meth:`ClassifierModel.logits` runs N > 1 images in one ``session.run``.

Class names: ImageNet-1k models in the registry carry the 1000 labels of
``models/imagenet_classes.txt`` (torchvision's ``_IMAGENET_CATEGORIES`` order, BSD-3-Clause;
it agrees with pytorch/hub's ``imagenet_classes.txt`` except that torchvision spells the two
duplicate names apart: 134 ``crane bird`` and 639 ``maillot tank suit``); bundled models carry
theirs in ``model.json`` (``labels`` or ``classes``). :func:`resolve_class` takes a name (any
case, ``_`` for a space), an index, or ``#index``.
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from dreamstate.engine.core.errors import ModelError
from dreamstate.models.graph import ForwardGraph
from dreamstate.models.registry import ModelSpec, imagenet_labels

log = logging.getLogger("dreamstate.models")

F32 = npt.NDArray[np.float32]

__all__ = ["ClassifierModel", "batch_free", "classifier_classes", "closest_names", "imagenet_labels", "resolve_class"]


def _norm(name: str) -> str:
    return " ".join(name.replace("_", " ").lower().split())


def closest_names(name: str, labels: Sequence[str], n: int = 5) -> list[str]:
    """Up to ``n`` labels nearest to ``name`` (difflib ratio on lower-case text; labels that
    contain it as a word come first)."""
    want = _norm(name)
    normed = {_norm(v): v for v in labels}
    inside = [v for k, v in normed.items() if want in k.split(" ") or (len(want) > 3 and want in k)]
    near = [normed[k] for k in difflib.get_close_matches(want, list(normed), n=n, cutoff=0.5)]
    return list(dict.fromkeys([*near, *inside]))[:n]


def resolve_class(target: str | int, labels: Sequence[str], num_classes: int, *, model: str) -> int:
    """The output index of ``target``: an int or digit string (``"607"``, ``"#607"``) is an
    index in ``0 .. num_classes - 1``; text is a label of ``labels`` (any case, ``_`` or space).

    Raises ``ModelError`` naming the model: an index past its classes, a name when it has no
    labels, or an unknown name (with the closest names)."""
    if isinstance(target, bool):
        raise ModelError(f"class {target!r} is neither a name nor an index", hint="give a class name or an index")
    text = str(target).strip()
    digits = text.removeprefix("#")
    if isinstance(target, int) or (digits.isdigit() and digits):
        index = int(target) if isinstance(target, int) else int(digits)
        if not 0 <= index < num_classes:
            raise ModelError(f"class index {index} is out of range for model {model}, which has {num_classes} classes",
                             hint=f"use an index from 0 to {num_classes - 1}")
        return index
    if not labels:
        raise ModelError(f"model {model} has no class names, so class {text!r} cannot be found",
                         hint=f"name the class by its index (0..{num_classes - 1}), or give the model a "
                              "model.json with 'labels'")
    want = _norm(text)
    for i, label in enumerate(labels):
        if _norm(label) == want:
            return i
    near = closest_names(text, labels)
    raise ModelError(f"model {model} has no class {text!r}",
                     hint=f"the closest names are: {', '.join(repr(v) for v in near)}" if near
                     else "see `dreamstate draw --list-classes`")


def classifier_classes(fg: ForwardGraph, *, model: str) -> int:
    """The class count of a loaded forward graph from its logits' static shape, without a
    session: ``(N, K)`` or ``(N, K, 1, 1)`` gives K. Raises ``ModelError`` naming ``model`` when
    the logits are not one score per class (a style or detection model) or their size is unknown."""
    logits = fg.resolve_layer("logits")
    shape = fg.shapes.get(logits)
    if shape is None or len(shape) < 2 or not isinstance(shape[1], int):
        raise ModelError(f"model {model}: the size of its output {logits!r} is unknown ({shape}), so it cannot "
                         "be used as a classifier", hint="export the classifier with a static class count")
    if any(d != 1 for d in shape[2:]) or shape[1] < 2:
        raise ModelError(f"model {model} has no classifier output: its output {logits!r} has shape "
                         f"{tuple(shape)}, not one score per class",
                         hint="use an image classifier (ImageNet models: `dreamstate models list`), not a style "
                              "or detection model")
    return int(shape[1])


def batch_free(fg: ForwardGraph) -> ForwardGraph:
    """``fg`` with every Reshape whose constant target shape fixes the batch at 1 (``[1, 256]``,
    as old exports such as MNIST's write) made to copy the batch instead (``[0, 256]``: ONNX
    Reshape's 0 takes the input's own size), so the forward runs N > 1 images at once."""
    import dataclasses

    consts = dict(fg.consts)
    for n in fg.nodes:
        if n.op != "Reshape" or len(n.inputs) < 2 or n.attrs.get("allowzero", 0):
            continue
        shape = consts.get(n.inputs[1])
        if shape is not None and shape.ndim == 1 and len(shape) >= 2 and int(shape[0]) == 1:
            fixed = shape.copy()
            fixed[0] = 0
            consts[n.inputs[1]] = fixed
    return dataclasses.replace(fg, consts=consts)


class ClassifierModel:
    """A classifier forward pass in an onnxruntime session (see the module docstring).

    Lifecycle: ``ClassifierModel.load(model)`` resolves and checks the model; then ``logits``,
    ``log_probs`` and ``resolve`` may be called from one thread at a time per instance.

    ``size`` is the square working size in pixels the model was trained at (224 for ImageNet
    models, 64 for the starter model, 28 for MNIST; ``input_size`` in a model.json).
    """

    def __init__(self, *, spec: ModelSpec, session: Any, provider: str, image_input: str, output: str,
                 num_classes: int, size: int, forward: ForwardGraph | None = None,
                 device: Literal["auto", "cpu", "cuda"] = "cpu", threads: int | None = None) -> None:
        self.spec = spec
        self._forward = forward
        self._device = device
        self._threads = threads
        self._grad_session: Any = None
        self.name = spec.name
        self.provider = provider
        self.num_classes = num_classes
        self.size = size
        self.labels: tuple[str, ...] = spec.labels
        self._session = session
        self._image = image_input
        self._output = output
        pre = spec.preprocess
        order = [2, 1, 0] if pre.bgr else [0, 1, 2]
        if pre.channels == 1:
            mean, std = np.asarray(pre.mean[:1], np.float32), np.asarray(pre.std[:1], np.float32)
        else:
            mean = np.asarray(pre.mean, np.float32)[order]
            std = np.asarray(pre.std, np.float32)[order]
        self._mean = mean.reshape(1, -1, 1, 1)
        self._std = std.reshape(1, -1, 1, 1)
        self._pre = pre

    @classmethod
    def load(cls, model: str | Path, *, device: Literal["auto", "cpu", "cuda"] = "cpu",
             threads: int | None = None) -> ClassifierModel:
        """Resolve ``model`` (registry name or .onnx path), cut its forward pass at the logits and
        open a session. Raises ``ModelError`` naming the model when it is missing, not an ONNX
        image model, has no classifier output (one score per class), or its labels disagree
        with its class count."""
        from dreamstate.models import registry
        from dreamstate.models.compiler import forward_features_model
        from dreamstate.models.graph import load_forward
        from dreamstate.models.session import make_session

        path, spec = registry.resolve(model)
        fg = load_forward(path, label=str(path))
        logits = fg.resolve_layer("logits")
        classifier_classes(fg, model=f"{spec.name} ({path})")
        proto = forward_features_model(batch_free(fg), [logits])
        session, provider = make_session(proto.SerializeToString(), device=device, threads=threads,
                                         what=f"{spec.name} classifier")
        size = spec.input_size
        probe = np.zeros((2, fg.image_channels or spec.preprocess.channels, size, size), np.float32)
        try:
            (out,) = session.run([logits], {fg.image: probe})
        except Exception as exc:  # onnxruntime raises its own Fail/RuntimeException types
            raise ModelError(f"model {spec.name} ({path}) cannot classify a batch of two {size}x{size} images: {exc}",
                             hint="give the classifier's input_size in its model.json, or export it with a "
                                  "dynamic batch") from exc
        shape = tuple(int(d) for d in np.shape(out))
        if len(shape) < 2 or shape[0] != 2 or any(d != 1 for d in shape[2:]) or shape[1] < 2:
            raise ModelError(
                f"model {spec.name} ({path}) has no classifier output: its last output {logits!r} has shape "
                f"{shape[1:]} per image, not one score per class",
                hint="use an image classifier (ImageNet models: `dreamstate models list`), not a style "
                     "or detection model")
        k = shape[1]
        if spec.labels and len(spec.labels) != k:
            raise ModelError(f"model {spec.name} has {k} classes but its description lists {len(spec.labels)} "
                             "class names", hint="fix 'labels' in its model.json, or remove it to use indices")
        return cls(spec=spec, session=session, provider=provider, image_input=fg.image, output=logits,
                   num_classes=k, size=size, forward=batch_free(fg), device=device, threads=threads)

    # ------------------------------------------------------------------ pixels
    def to_model_space(self, images: npt.NDArray[np.floating]) -> F32:
        """(N, H, W, 3) RGB in [0, 1] -> (N, C, H, W) float32 model input (the registry's
        preprocessing: scale to ``value_range``, minus mean, over std, BGR or grey when asked)."""
        a = np.asarray(images, dtype=np.float32)
        if a.ndim != 4 or a.shape[3] != 3:
            raise ModelError(f"expected (N, H, W, 3) RGB images, got shape {a.shape}", hint="stack RGB images")
        if self._pre.channels == 1:
            a = (a @ np.asarray([0.299, 0.587, 0.114], np.float32))[..., None]
        elif self._pre.bgr:
            a = a[..., ::-1]
        x = a.transpose(0, 3, 1, 2) * np.float32(self._pre.scale)
        out: F32 = np.ascontiguousarray((x - self._mean) / self._std, dtype=np.float32)
        return out

    # ------------------------------------------------------------------ scoring
    def logits(self, images: npt.NDArray[np.floating]) -> F32:
        """(N, H, W, 3) RGB in [0, 1] -> (N, classes) logits, in one ``session.run``."""
        (out,) = self._session.run([self._output], {self._image: self.to_model_space(images)})
        res: F32 = np.asarray(out, np.float32).reshape(len(images), self.num_classes)
        return res

    def log_probs(self, images: npt.NDArray[np.floating]) -> F32:
        """(N, classes) natural-log probabilities: log-softmax of :meth:`logits` (in nats, <= 0)."""
        z = self.logits(images).astype(np.float64)
        z -= z.max(axis=1, keepdims=True)
        lp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        res: F32 = lp.astype(np.float32)
        return res

    def log_prob_grad(self, images: npt.NDArray[np.floating], weights: npt.NDArray[np.floating]) -> tuple[F32, F32]:
        """Log-probabilities and their weighted gradient in one onnxruntime call.

        ``images`` (N, H, W, 3) RGB in [0, 1], ``weights`` (N, classes). Returns ``(log_probs``
        (N, classes) ``, grad`` (N, H, W, 3)) where ``grad`` is the derivative of
        ``sum_n sum_k weights[n, k] * log_probs[n, k]`` with respect to the RGB pixels in [0, 1]
        (through the preprocessing). The gradient graph (``compiler.compile_logprob_grad``) is
        compiled and opened on first use."""
        if self._grad_session is None:
            if self._forward is None:
                raise ModelError(f"model {self.name} was not loaded with its graph, so it has no gradient",
                                 hint="load it with ClassifierModel.load")
            from dreamstate.models.compiler import compile_logprob_grad
            from dreamstate.models.session import make_session

            proto = compile_logprob_grad(self._forward, self._output)
            self._grad_session, _ = make_session(proto.SerializeToString(), device=self._device,
                                                 threads=self._threads, what=f"{self.name} class gradient")
        a = np.asarray(images, np.float32)
        w = np.ascontiguousarray(np.broadcast_to(np.asarray(weights, np.float32), (len(a), self.num_classes)))
        z, g = self._grad_session.run(["logits_out", "grad"], {self._image: self.to_model_space(a),
                                                               "target_weights": w})
        zz = np.asarray(z, np.float64).reshape(len(a), self.num_classes)
        zz -= zz.max(axis=1, keepdims=True)
        lp: F32 = (zz - np.log(np.exp(zz).sum(axis=1, keepdims=True))).astype(np.float32)
        # back through to_model_space: x = (a[..., order] * scale - mean) / std, channels first
        gx = np.asarray(g, np.float32) * np.float32(self._pre.scale) / self._std
        gh = gx.transpose(0, 2, 3, 1)
        if self._pre.channels == 1:
            gh = gh * np.asarray([0.299, 0.587, 0.114], np.float32)
        elif self._pre.bgr:
            gh = gh[..., ::-1]
        grad: F32 = np.ascontiguousarray(gh, dtype=np.float32)
        return lp, grad

    def resolve(self, target: str | int) -> int:
        """Class index of a name or index (see :func:`resolve_class`)."""
        return resolve_class(target, self.labels, self.num_classes, model=self.name)

    def label(self, index: int) -> str:
        """The class name of ``index`` (``#index`` when the model has no names)."""
        return self.labels[index] if self.labels else f"#{index}"
