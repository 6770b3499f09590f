"""onnxruntime sessions with provider choice: CUDA when available, CPU otherwise.

``make_session`` returns a session and the provider that actually runs it. ``device="cuda"``
forces CUDA (ModelError when it is not installed); ``auto`` tries CUDA and falls back to CPU
with a warning when CUDA fails at load time.
"""

from __future__ import annotations

import logging
from typing import Any, Literal

from dreamstate.engine.core.errors import ModelError

log = logging.getLogger("dreamstate.models")

Device = Literal["auto", "cpu", "cuda"]
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
CONV_ALGO_SEARCH = ("HEURISTIC", "EXHAUSTIVE", "DEFAULT")


def cuda_provider(conv_algo_search: str = "HEURISTIC") -> tuple[str, dict[str, str]]:
    """The CUDA provider with its options, as ``InferenceSession(providers=[...])`` takes it.

    ``conv_algo_search`` is cuDNN's convolution algorithm search: ``HEURISTIC`` by default,
    because in onnxruntime 1.20 and later ``DEFAULT`` maps to a slow path (onnxruntime#22705)
    and ``EXHAUSTIVE`` benchmarks every algorithm for each new input shape (the live renderer
    buckets its octave sizes, ``engine.render.dream.OCTAVE_BUCKET_PX``, to keep those few).
    Raises ``ModelError`` for another value."""
    if conv_algo_search not in CONV_ALGO_SEARCH:
        raise ModelError(f"cudnn_conv_algo_search {conv_algo_search!r} is not one of {', '.join(CONV_ALGO_SEARCH)}",
                         hint="use HEURISTIC unless a benchmark says otherwise")
    return CUDA, {"cudnn_conv_algo_search": conv_algo_search, "do_copy_in_default_stream": "1"}


def available_providers() -> list[str]:
    import onnxruntime as ort

    return list(ort.get_available_providers())


def cuda_missing(asked_by: str = "--device cuda") -> ModelError | None:
    """The error for ``device = "cuda"`` where this onnxruntime has no CUDA provider (None when it
    has one). ``asked_by`` names where cuda was asked for (the flag, or ``output.device``).
    A configuration error: retrying does not fix it, so callers refuse before any work."""
    have = available_providers()
    if CUDA in have:
        return None
    return ModelError(
        f"{asked_by} asks for CUDA, but this onnxruntime has no CUDA provider (has {have})",
        hint="pip install 'dreamstate[gpu]' (onnxruntime-gpu) on a machine with a CUDA GPU, "
        "or use device auto (CUDA when it loads, else the CPU) or cpu",
    )


def session_options(threads: int | None) -> Any:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        so.intra_op_num_threads = int(threads)
        so.inter_op_num_threads = 1
    so.log_severity_level = 3
    # No spin-waiting between steps: the renderer, the signal pipeline and the display share a
    # few cores, and a spinning pool would steal them (it also skews side-by-side benchmarks).
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return so


def make_session(
    model: bytes | str, *, device: Device = "auto", threads: int | None = None, what: str = "model",
    conv_algo_search: str = "HEURISTIC",
) -> tuple[Any, str]:
    """Create an InferenceSession; returns (session, provider that runs it). ``conv_algo_search``:
    see :func:`cuda_provider` (CUDA only)."""
    import onnxruntime as ort

    cuda = cuda_provider(conv_algo_search)
    if device not in ("auto", "cpu", "cuda"):
        raise ModelError(f"unknown device {device!r}", hint="use auto, cpu or cuda")
    have = available_providers()
    so = session_options(threads)
    want_cuda = device == "cuda" or (device == "auto" and CUDA in have)
    if device == "cuda" and (missing := cuda_missing()) is not None:
        raise missing
    if want_cuda:
        try:
            sess = ort.InferenceSession(model, so, providers=[cuda, CPU])
            provider = sess.get_providers()[0]
            if provider == CUDA:
                log.info("dream session on CUDA", extra={"model": what, "provider": provider})
                return sess, provider
            log.warning("CUDA provider did not load; running on CPU", extra={"model": what})
            if device == "cuda":
                raise ModelError(
                    f"CUDA failed to load for {what}", hint="check the CUDA/cuDNN install or use --device cpu"
                )
            return sess, provider
        except ModelError:
            raise
        except Exception as exc:  # onnxruntime raises its own Fail/RuntimeException types
            if device == "cuda":
                raise ModelError(f"CUDA session for {what} failed: {exc}", hint="use --device cpu") from exc
            log.warning("CUDA session failed; falling back to CPU", extra={"model": what, "error": str(exc)})
    try:
        sess = ort.InferenceSession(model, so, providers=[CPU])
    except Exception as exc:  # onnxruntime's exception types are not exported
        raise ModelError(f"onnxruntime could not load {what}: {exc}", hint="recompile it or report the model") from exc
    log.info("dream session on CPU", extra={"model": what, "provider": CPU, "threads": threads})
    return sess, CPU
