"""The fused ascent (``compiler.compile_ascent`` + ``DreamModel.ascend`` with IOBinding) against
the numpy step loop, on the three real models: same maths, one frame back per call, a loud
fallback where the graph cannot be built, and the renderer using it where it applies."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import skimage.data

from dreamstate.engine.core.images import resize
from dreamstate.engine.render.dream import DreamParams, dream_image, dream_octave
from dreamstate.engine.render.masks import circle_mask
from dreamstate.models.dream import DreamModel, compile_cached

MODELS = ["starter", "efficientnet-lite0", "squeezenet"]
# one step, fused against numpy from the same frame: the same float32 maths in two graphs
STEP_TOL = 1e-5  # of the model's pixel range (measured: about 6e-8)
# a chain of steps: a ReLU or clip boundary met by one float32 rounding can flip a few pixels
# (measured: the mean difference is at most 1e-3 of the mean change, the largest one pixel 7e-3)
CHAIN_MEAN_TOL = 0.01  # of the mean change the steps made


@pytest.fixture(scope="module")
def models(shared_models: Path) -> dict[str, DreamModel]:
    """The three models on the CPU, with the renderer's fused path switched on as on CUDA."""
    loaded = {
        "starter": DreamModel.load("starter", device="cpu", threads=2),
        "efficientnet-lite0": DreamModel.load("efficientnet-lite0", device="cpu", threads=2),
        "squeezenet": DreamModel.load(shared_models / "SqueezeNet_fp16.onnx", ["fire5/concat"], device="cpu",
                                      threads=2),
    }
    for m in loaded.values():
        m.prefer_fused = True
    return loaded


def _cat(w: int = 160, h: int = 128) -> np.ndarray:
    out: np.ndarray = resize(skimage.data.chelsea().astype(np.float32) / 255.0, (w, h))
    return out


def _numpy_step(m: DreamModel, x: np.ndarray, shift: tuple[int, int], step: float,
                mask: np.ndarray | None) -> tuple[np.ndarray, float]:
    """The renderer's step written out here (not the shared ascent_update), so a slip in either
    shows: roll, gradient, roll back, g_p = g * s, x += step / mean_active|g_p| * g_p * s, clip."""
    g, loss = m.step(np.roll(x, shift, axis=(2, 3)))
    g = np.roll(g, (-shift[0], -shift[1]), axis=(2, 3)) * m.pixel_scale
    if mask is not None:
        g = g * mask
    active = np.broadcast_to(mask > 0, g.shape) if mask is not None else np.ones(g.shape, bool)
    out = x + (step / float(np.abs(g[active]).mean())) * g * m.pixel_scale
    return m.clip(out.astype(np.float32)), loss


def _range(m: DreamModel) -> float:
    return float((m._hi - m._lo).max())


@pytest.mark.parametrize("name", MODELS)
def test_each_fused_step_is_the_numpy_step(models: dict[str, DreamModel], name: str) -> None:
    m = models[name]
    x = m.to_model_space(_cat())
    mask = circle_mask(128, 160) * 0.5
    shifts = [(11, -20), (0, 0), (-31, 7), (5, 0)]
    before = (m.step_runs, m.ascent_runs)
    for k, shift in enumerate(shifts):
        mk = mask if k % 2 else None
        fused, losses = m.ascend(x, [shift], step=1.5, mask=mk)
        want, loss = _numpy_step(m, x, shift, 1.5, mk)
        assert np.abs(fused - want).max() <= STEP_TOL * _range(m), (name, k)
        assert losses == pytest.approx([loss], rel=1e-5)
        assert np.abs(want - x).mean() > 1e-3 * _range(m)  # the step moved the frame
        x = want
    assert m.ascent_runs - before[1] == len(shifts)
    assert m.step_runs - before[0] == len(shifts)  # the reference's steps only


class Counting:
    """A real onnxruntime session, its calls counted."""

    def __init__(self, session: Any) -> None:
        self.session = session
        self.calls: dict[str, int] = {"run": 0, "run_with_iobinding": 0, "io_binding": 0}

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.session, name)
        if name in self.calls:
            def counted(*a: Any, **k: Any) -> Any:
                self.calls[name] += 1
                return attr(*a, **k)
            return counted
        return attr


@pytest.fixture
def counted_starter() -> Iterator[DreamModel]:
    m = DreamModel.load("starter", device="cpu", threads=2)
    m.prefer_fused = True
    assert m.fused
    m._ascent_session = Counting(m._ascent_session)
    m._session = Counting(m._session)
    yield m


def test_one_ascend_call_runs_every_step_on_the_device_and_brings_one_frame_back(
        counted_starter: DreamModel, monkeypatch: pytest.MonkeyPatch) -> None:
    m = counted_starter
    x = m.to_model_space(_cat())
    frames_back: list[tuple[int, ...]] = []
    real_numpy = ort.OrtValue.numpy

    def numpy_spy(self: ort.OrtValue) -> Any:
        out = real_numpy(self)
        frames_back.append(tuple(out.shape))
        return out

    monkeypatch.setattr(ort.OrtValue, "numpy", numpy_spy)
    shifts = [(3, -4), (-9, 2), (0, 15), (7, 7), (-1, -30)]
    out, losses = m.ascend(x, shifts, step=1.5)
    ascent, step = m._ascent_session.calls, m._session.calls  # type: ignore[attr-defined]
    assert ascent == {"run": 0, "run_with_iobinding": len(shifts), "io_binding": 1}
    assert step == {"run": 0, "run_with_iobinding": 0, "io_binding": 0}
    assert m.step_runs == 0 and m.ascent_runs == len(shifts) and m.ascent_frames_back == 1
    # what came back to the host: the final frame once, and the five scalar losses
    assert sorted(frames_back) == sorted([x.shape] + [()] * len(shifts))
    assert len(losses) == len(shifts) and out.shape == x.shape
    assert np.abs(out - x).mean() > 0.005  # five steps moved the frame
    assert np.array_equal(x, m.to_model_space(_cat()))  # the caller's frame is not written


@pytest.mark.parametrize("name", MODELS)
def test_a_chain_of_fused_steps_matches_the_numpy_loop(models: dict[str, DreamModel], name: str) -> None:
    """The renderer's dream_octave and dream_image with the same seed, fused (the model itself)
    and numpy (a wrapper without ``ascend``): the same shifts, the same picture."""
    m = models[name]

    class NumpyOnly:
        def __getattr__(self, attr: str) -> object:
            return getattr(m, attr)

    img = _cat()
    for mask in (None, circle_mask(128, 160)):
        params = DreamParams(octaves=2, jitter=32)
        runs = m.ascent_runs
        fused, fused_loss = dream_octave(m, img, params, 0, steps=4, mask=mask, rng=np.random.default_rng(3))
        assert m.ascent_runs - runs == 4
        steps = m.step_runs
        ref, ref_loss = dream_octave(NumpyOnly(), img, params, 0, steps=4, mask=mask,  # type: ignore[arg-type]
                                     rng=np.random.default_rng(3))
        assert m.step_runs - steps == 4
        change = float(np.abs(ref - img).mean())
        assert change > 0.005
        assert float(np.abs(fused - ref).mean()) <= CHAIN_MEAN_TOL * change
        assert fused_loss == pytest.approx(ref_loss, rel=1e-3)
    params = DreamParams(octaves=3, steps_per_octave=3, jitter=16)
    fused = dream_image(m, img, params, seed=1)
    ref = dream_image(NumpyOnly(), img, params, seed=1)  # type: ignore[arg-type]
    assert float(np.abs(fused - ref).mean()) <= CHAIN_MEAN_TOL * float(np.abs(ref - img).mean())
    # another seed is other shifts: the agreement above is not two paths ignoring the jitter
    other = dream_image(NumpyOnly(), img, params, seed=2)  # type: ignore[arg-type]
    assert float(np.abs(other - ref).mean()) > 10 * float(np.abs(fused - ref).mean())


@pytest.mark.parametrize("name", ["starter", "squeezenet"])
def test_the_objective_rises_across_an_ascent(models: dict[str, DreamModel], name: str) -> None:
    m = models[name]
    x = m.to_model_space(_cat())
    out, losses = m.ascend(x, [(0, 0)] * 6, step=1.5)
    assert all(b > a for a, b in itertools.pairwise(losses)), losses
    assert m.step(out)[1] > losses[-1] > losses[0]  # and the last step raised it too
    jittered, _ = m.ascend(x, [(4, -6), (-12, 3), (9, 9), (-2, 14), (7, -7), (0, 5)], step=1.5)
    assert m.step(jittered)[1] > 1.05 * m.step(x)[1]


def test_a_model_the_graph_cannot_be_built_for_warns_once_and_dreams_with_numpy(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A model whose image input is called ``ascent_x`` (a name the ascent graph reserves)."""
    import onnx

    from dreamstate.models import registry

    starter = DreamModel.load("starter", device="cpu", threads=2)
    proto = onnx.load(str(registry.resolve("starter")[0]))
    old = proto.graph.input[0].name
    proto.graph.input[0].name = "ascent_x"
    for node in proto.graph.node:
        node.input[:] = ["ascent_x" if i == old else i for i in node.input]
    path = tmp_path / "clash.onnx"
    onnx.save(proto, str(path))
    sidecar = registry.resolve("starter")[0].with_suffix(".json")
    if sidecar.exists():
        path.with_suffix(".json").write_text(sidecar.read_text())
    m = DreamModel.load(path, list(starter.tensors), device="cpu", threads=2, cache_dir=tmp_path)
    m.prefer_fused = True
    x = m.to_model_space(_cat())
    shifts = [(5, -3), (-8, 12), (0, 0)]
    with caplog.at_level(logging.WARNING, logger="dreamstate.models"):
        out, losses = m.ascend(x, shifts, step=1.5)
        assert len(losses) == len(shifts)
        again, _ = m.ascend(x, shifts, step=1.5)
        assert not m.fused
    said = [r for r in caplog.records if "fused ascent unavailable" in r.getMessage()]
    assert len(said) == 1
    assert said[0].model == "clash" and "ascent_x" in said[0].reason  # type: ignore[attr-defined]
    assert m.ascent_runs == 0 and m.step_runs == 2 * len(shifts)
    assert np.array_equal(out, again)
    want = x
    for shift in shifts:
        want, _ = _numpy_step(m, want, shift, 1.5, None)
    assert np.abs(out - want).max() <= STEP_TOL * _range(m)
    assert np.abs(out - x).mean() > 1e-3 * _range(m)
    # the renderer still dreams it, by the same loop
    steps = m.step_runs
    rgb, _ = dream_octave(m, _cat(), DreamParams(octaves=1), 0, steps=2, rng=np.random.default_rng(0))
    assert np.abs(rgb - _cat()).mean() > 0.002 and m.step_runs - steps == 2 and m.ascent_runs == 0


def test_on_the_cpu_the_renderer_keeps_the_numpy_loop_and_builds_no_second_session() -> None:
    """The fused ascent measured 0-6 % slower than the numpy loop on the CPU: a CPU model does
    not prefer it, so the renderer never builds its graph or session there."""
    m = DreamModel.load("starter", device="cpu", threads=2)
    assert not m.prefer_fused
    dream_octave(m, _cat(), DreamParams(octaves=1), 0, steps=2, rng=np.random.default_rng(0))
    dream_image(m, _cat(), DreamParams(octaves=2, steps_per_octave=2), seed=0)
    assert m.ascent_runs == 0 and m.step_runs == 2 + 2 * 2
    assert m._ascent_session is None and m._ascent_error is None


def test_tiled_and_padded_frames_keep_the_numpy_loop(models: dict[str, DreamModel]) -> None:
    m = models["starter"]
    runs, steps = m.ascent_runs, m.step_runs
    dream_octave(m, _cat(), DreamParams(octaves=1, tile=96), 0, steps=2, rng=np.random.default_rng(0))
    assert m.ascent_runs == runs and m.step_runs - steps == 2 * 4  # 2x2 tiles per step
    small = _cat(m.min_size[1] - 1, max(48, m.min_size[0]))
    dream_octave(m, small, DreamParams(octaves=1), 0, steps=1, rng=np.random.default_rng(0))
    assert m.ascent_runs == runs and m.step_runs - steps == 2 * 4 + 1


def test_the_ascent_graph_is_cached_beside_the_step(tmp_path: Path) -> None:
    step = compile_cached("starter", cache_dir=tmp_path)
    ascent = compile_cached("starter", cache_dir=tmp_path, ascent=True)
    assert step.path != ascent.path and ascent.path.exists()
    import onnx

    graph = onnx.load_from_string(ascent.data).graph
    assert [i.name for i in graph.input][:2] == ["ascent_x", "ascent_shift"]
    assert [o.name for o in graph.output] == ["x_next", "loss"]
    assert compile_cached("starter", cache_dir=tmp_path, ascent=True).data == ascent.data


@pytest.mark.gpu
def test_ascend_on_cuda_keeps_the_frame_in_cuda_memory(shared_models: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("no CUDA provider: pip install 'dreamstate[gpu]' on a machine with a GPU")
    m = DreamModel.load(shared_models / "SqueezeNet_fp16.onnx", ["fire5/concat"], device="cuda")
    assert m.provider == "CUDAExecutionProvider"
    made: list[tuple[tuple[int, ...], str]] = []

    def spying(real: Any) -> Any:
        def spy(*a: Any, **k: Any) -> Any:
            v = real(*a, **k)
            made.append((tuple(v.shape()), v.device_name().lower()))
            return v
        return spy

    for maker in ("ortvalue_from_shape_and_type", "ortvalue_from_numpy"):
        monkeypatch.setattr(ort.OrtValue, maker, spying(getattr(ort.OrtValue, maker)))
    x = m.to_model_space(_cat())
    out, losses = m.ascend(x, [(3, -4), (-9, 2), (0, 15)], step=1.5)
    frames = [device for shape, device in made if shape == x.shape]
    assert frames == ["cuda", "cuda"]  # the two ping-pong buffers
    assert [device for shape, device in made if shape == ()].count("cuda") >= 3  # the losses stay there
    assert m.ascent_runs == 3 and m.ascent_frames_back == 1 and m.step_runs == 0
    cpu = DreamModel.load(shared_models / "SqueezeNet_fp16.onnx", ["fire5/concat"], device="cpu")
    ref, ref_losses = cpu.ascend(x, [(3, -4), (-9, 2), (0, 15)], step=1.5)
    assert float(np.abs(out - ref).mean()) <= CHAIN_MEAN_TOL * float(np.abs(ref - x).mean())
    assert losses == pytest.approx(ref_losses, rel=1e-2)


@pytest.mark.usefixtures("restore_logging")
def test_bench_dream_times_the_numpy_loop_against_the_fused_ascent(capsys: pytest.CaptureFixture[str]) -> None:
    from dreamstate.engine.tools.cli import main as cli_main

    argv = ["bench", "dream", "--model", "starter", "--sizes", "96x64", "--repeat", "1", "--no-torch",
            "--ascent-steps", "2", "--device", "cpu"]
    assert cli_main(argv) == 0
    out = capsys.readouterr().out
    assert "numpy step loop vs fused ascent" in out and "2 steps a run" in out
    row = next(line for line in out.splitlines() if "starter" in line and "96x64" in line and "CPU" in line)
    cells = [c.strip() for c in row.strip("│ ").split("│")]
    numpy_ms, fused_ms, ratio = float(cells[3]), float(cells[4]), float(cells[5])
    assert numpy_ms > 0 and fused_ms > 0 and ratio > 0  # speed is the bench's to print, not a test's to judge
    assert float(cells[8]) < CHAIN_MEAN_TOL  # the two runs dreamed the same
    assert cli_main([*argv[:-4], "--ascent-steps", "0"]) == 0
    assert "fused ascent" not in capsys.readouterr().out


@pytest.mark.parametrize(("argv", "message"), [
    (["--repeat", "0"], "argument --repeat: 0 must be at least 1"),
    (["--ascent-steps", "-1"], "argument --ascent-steps: -1 must be 0 or more"),
    (["--sizes", "0x0"], "size '0x0' is out of range"),
    (["--sizes", "224"], "size '224' must look like 640x360"),
])
def test_bench_dream_refuses_bad_numbers_up_front(argv: list[str], message: str,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """A new user found --repeat 0 and --sizes 224 ended in tracebacks, --ascent-steps -1 passed."""
    from dreamstate.engine.tools.cli import main as cli_main

    with pytest.raises(SystemExit) as exc:
        cli_main(["bench", "dream", "--no-torch", "--model", "starter", *argv])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.skipif("CUDAExecutionProvider" in ort.get_available_providers(), reason="CUDA is here")
@pytest.mark.usefixtures("restore_logging")
def test_bench_dream_device_cuda_without_cuda_refuses_before_timing(capsys: pytest.CaptureFixture[str]) -> None:
    from dreamstate.engine.tools.cli import main as cli_main

    assert cli_main(["bench", "dream", "--no-torch", "--model", "starter", "--sizes", "64x64", "--repeat", "1",
                     "--device", "cuda"]) == 1
    assert "dream step, CPU" not in capsys.readouterr().out  # no table was timed first
