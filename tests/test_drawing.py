"""Drawings the network believes: the ellipse model, its SVG, the batched objective, the two
optimisers, class names, the CLI and the show checks. Real onnxruntime sessions on SqueezeNet
(../shared/models) and the bundled starter model."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import pytest

from dreamstate.engine.core.errors import DreamstateError, ModelError, ShowError
from dreamstate.engine.render.drawgrad import GradientSearch
from dreamstate.engine.render.drawing import (
    CmaSearch,
    DrawingObjective,
    RandomSearch,
    decode,
    dimension,
    make_search,
    random_drawing,
    render,
    render_u8,
    run_search,
    to_svg,
)
from dreamstate.models.classify import ClassifierModel, closest_names, resolve_class
from dreamstate.models.registry import imagenet_labels


@pytest.fixture(scope="module")
def squeeze(shared_models: Path) -> ClassifierModel:
    return ClassifierModel.load(shared_models / "SqueezeNet_fp16.onnx", device="cpu", threads=2)


@pytest.fixture(scope="module")
def starter() -> ClassifierModel:
    return ClassifierModel.load("starter", device="cpu", threads=2)


def _svg_raster(svg: str) -> np.ndarray:
    import cairosvg
    from PIL import Image

    png = cairosvg.svg2png(bytestring=svg.encode())
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(np.float32)


# --- the drawing model ---------------------------------------------------------------------------

@pytest.mark.parametrize("size", [(256, 256), (320, 180)])
def test_svg_and_raster_agree(size: tuple[int, int]) -> None:
    """CairoSVG's raster of the SVG and OpenCV's raster differ only along anti-aliased edges;
    the same SVG with the angles mirrored (a wrong rotation convention) differs far more."""
    for seed in range(3):
        theta = random_drawing(40, seed)
        raster = render_u8(theta, size).astype(np.float32)
        assert raster.shape == (size[1], size[0], 3)
        svg = _svg_raster(to_svg(theta, size))
        diff = np.abs(raster - svg)
        assert diff.mean() < 2.5, diff.mean()
        assert (diff.max(axis=2) > 40).mean() < 0.05
        wrong = theta.copy()
        wrong[4:-9:6] = 1.0 - wrong[4:-9:6]  # angle a -> 180 - a: the mirror image of each ellipse
        wrong_diff = np.abs(raster - _svg_raster(to_svg(wrong, size))).mean()
        assert wrong_diff > 3 * diff.mean(), (wrong_diff, diff.mean())


def test_decode_ranges_and_two_colour_palette() -> None:
    theta = random_drawing(40, 1)
    assert theta.shape == (dimension(40),) == (249,)
    g = decode(theta)
    assert g.centres.shape == (40, 2) and g.centres.min() >= -0.1 and g.centres.max() <= 1.1
    assert g.axes.min() >= 0.02 and g.axes.max() <= 0.4
    assert g.angles.min() >= 0 and g.angles.max() <= 180 and set(g.which) <= {0, 1}
    img = render_u8(theta, (200, 100))  # letterboxed: the sides are the background colour
    bg = np.clip(np.round(g.colours[0] * 255), 0, 255)
    assert np.abs(img[:, :40].reshape(-1, 3) - bg).max() <= 1
    colours = {tuple(c) for c in render_u8(theta, (64, 64)).reshape(-1, 3)}
    assert len(colours) > 3  # anti-aliased edges blend the three colours
    with pytest.raises(DreamstateError, match="6 \\* ellipses \\+ 9"):
        decode(np.zeros(10))
    with pytest.raises(DreamstateError, match="at least one ellipse"):
        dimension(0)
    assert render(theta, (32, 32)).dtype == np.float32


# --- class names -----------------------------------------------------------------------------------

def test_imagenet_labels_ship_with_the_registry(squeeze: ClassifierModel) -> None:
    labels = imagenet_labels()
    assert len(labels) == 1000 and len(set(labels)) == 1000
    assert labels[2] == "great white shark" and labels[148] == "killer whale" and labels[607] == "jack-o'-lantern"
    assert squeeze.labels == labels and squeeze.num_classes == 1000 and squeeze.size == 224
    assert squeeze.resolve("Killer_Whale") == 148 == squeeze.resolve(148) == squeeze.resolve("#148")
    assert squeeze.resolve("148") == 148


def test_unknown_class_gives_the_closest_names(squeeze: ClassifierModel) -> None:
    with pytest.raises(ModelError) as err:
        squeeze.resolve("killer wale")
    assert "squeezenet" in str(err.value) and "'killer whale'" in str(err.value)
    assert closest_names("jack o lantern", imagenet_labels())[0] == "jack-o'-lantern"
    with pytest.raises(ModelError, match=r"out of range for model squeezenet1\.0-fp16, which has 1000 classes"):
        squeeze.resolve(1000)


def test_starter_model_classes_and_a_model_without_names(starter: ClassifierModel, shared_models: Path) -> None:
    assert starter.num_classes == 25 and starter.size == 64 and starter.resolve("spiral") == 20
    mnist = ClassifierModel.load(shared_models / "mnist.onnx", threads=1)
    assert mnist.num_classes == 10 and mnist.resolve("7") == 7
    with pytest.raises(ModelError, match="out of range for model mnist"):
        resolve_class(12, (), 10, model="mnist")
    with pytest.raises(ModelError, match="model bare has no class names"):
        resolve_class("cat", (), 10, model="bare")


def test_a_model_with_no_classifier_output_is_named(shared_models: Path) -> None:
    with pytest.raises(ModelError) as err:
        ClassifierModel.load(shared_models / "candy.onnx", threads=1)
    assert "candy" in str(err.value)


# --- the objective ----------------------------------------------------------------------------------

def test_batched_score_equals_single_image_score(squeeze: ClassifierModel) -> None:
    thetas = np.stack([random_drawing(40, s) for s in range(5)])
    batched = DrawingObjective(squeeze, 148, jitters=3, batch=16)
    single = DrawingObjective(squeeze, 148, jitters=3, batch=1)
    a, b = batched.score(thetas), single.score(thetas)
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
    assert a.shape == (5,) and np.all(a <= 0) and batched.evaluations == 5
    # one onnxruntime call with N > 1 gives what N calls give
    imgs = batched.images(thetas).astype(np.float32) / 255
    np.testing.assert_allclose(squeeze.logits(imgs), np.concatenate([squeeze.logits(i[None]) for i in imgs]),
                               rtol=1e-4, atol=1e-3)
    assert len({float(v) for v in a}) == 5  # different drawings, different scores


def test_seeded_runs_are_reproducible(starter: ClassifierModel) -> None:
    target = starter.resolve("spiral")
    for name in ("cma", "random"):
        runs = []
        for _ in range(2):
            obj = DrawingObjective(starter, target, jitters=2, seed=3)
            runs.append(run_search(make_search(name, obj, random_drawing(20, 3), seed=3), evaluations=60))
        assert runs[0].evaluations == runs[1].evaluations >= 60
        np.testing.assert_array_equal(runs[0].best, runs[1].best)
        assert runs[0].score == runs[1].score
    other = run_search(make_search("cma", DrawingObjective(starter, target, jitters=2, seed=4),
                                   random_drawing(20, 4), seed=4), evaluations=60)
    assert not np.array_equal(other.best, runs[0].best)


@pytest.mark.slow
@pytest.mark.parametrize("optimizer", ["random", "cma", "gradient"])
def test_each_optimiser_raises_the_probability_on_squeezenet(squeeze: ClassifierModel, optimizer: str) -> None:
    """A short budget (100 drawings, two views each; the gradient search: 20 gradient steps,
    each with one drawing scored) raises each class's probability well above where the random
    start drawing had it."""
    for cls in ("great white shark", "killer whale", "jack-o'-lantern"):
        obj = DrawingObjective(squeeze, squeeze.resolve(cls), jitters=2, seed=0)
        start = random_drawing(40, 0)
        before = float(obj.score(start[None])[0])
        p_before = obj.probability(start)
        search: RandomSearch | CmaSearch | GradientSearch = RandomSearch(obj, start, seed=0, horizon=100) \
            if optimizer == "random" else CmaSearch(obj, start, seed=0) if optimizer == "cma" \
            else GradientSearch(obj, start, seed=0, horizon=20, polish_after=None)
        result = run_search(search, evaluations=21 if optimizer == "gradient" else 100)
        p_after = obj.probability(result.best)
        assert result.score > before + 1.0, (cls, before, result.score)
        assert p_after > 3 * p_before, (cls, p_before, p_after)
        assert math.isclose(result.score, search.best_score)


# --- bad input ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("argv", [["--seconds", "0"], ["--ellipses", "-3"], ["--ellipses", "0"],
                                  ["--seconds", "nan"]])
def test_draw_flags_are_checked_at_parse_time(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    from dreamstate.engine.tools.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["draw", "--class", "spiral", "--model", "starter", "--out", "x.png", *argv])
    assert exc.value.code == 2
    assert "argument" in capsys.readouterr().err


def test_draw_cli_writes_png_and_svg(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from dreamstate.engine.core.images import load_image
    from dreamstate.engine.tools.cli import main

    out, svg = tmp_path / "d.png", tmp_path / "d.svg"
    code = main(["draw", "--class", "spiral", "--model", "starter", "--evaluations", "40", "--ellipses", "12",
                 "--out", str(out), "--svg", str(svg), "--size", "200x100"])
    assert code == 0
    assert load_image(out).shape == (100, 200, 3)
    assert svg.read_text().startswith("<svg") and svg.read_text().count("<ellipse") == 12
    assert "spiral: score" in capsys.readouterr().out
    assert main(["draw", "--class", "dots", "--model", "starter", "--evaluations", "12", "--ellipses", "12",
                 "--optimizer", "gradient", "--out", str(out)]) == 0
    assert "dots: score" in capsys.readouterr().out
    assert main(["draw", "--class", "spirl", "--model", "starter", "--out", str(out)]) == 1
    assert main(["draw", "--list-classes", "--model", "starter"]) == 0
    assert "20\tspiral" in capsys.readouterr().out


SHOW = """
[show]
model = "starter"
default_scene = "calm"
[scenes.calm]
mode = "drawing"
draw = "spiral"
[scenes.focused]
mode = "drawing"
draw = ["checkers", "dots"]
optimizer = "gradient"
[scenes.attract]
layers = { block2 = 1.0 }
[output]
kind = "none"
"""


def test_show_drawing_scenes_are_checked(tmp_path: Path) -> None:
    from dreamstate.engine.runtime.showfile import load_show

    (tmp_path / "show.toml").write_text(SHOW)
    loaded = load_show(tmp_path / "show.toml")
    assert loaded.show.scenes["calm"].draw == ["spiral"] and loaded.show.scenes["focused"].mode == "drawing"
    assert loaded.show.scenes["focused"].optimizer == "gradient" and loaded.show.scenes["calm"].optimizer == "random"
    (tmp_path / "bad.toml").write_text(SHOW.replace('"dots"', '"dotz"').replace('draw = "spiral"', ""))
    with pytest.raises(ShowError) as err:
        load_show(tmp_path / "bad.toml")
    text = str(err.value)
    assert "scenes.calm" in text and "needs draw" in text
    assert "scenes.focused.draw[1]" in text and "'dots'" in text


def test_show_drawing_with_a_model_that_is_no_classifier(tmp_path: Path, shared_models: Path) -> None:
    import shutil

    from dreamstate.engine.runtime.showfile import load_show

    shutil.copy(shared_models / "mnist.onnx", tmp_path / "mnist.onnx")
    (tmp_path / "show.toml").write_text(SHOW.replace('model = "starter"', 'model = "mnist.onnx"')
                                        .replace("block2", "Plus214_Output_0"))
    with pytest.raises(ShowError) as err:
        load_show(tmp_path / "show.toml")
    assert "scenes.calm.draw[0]: model mnist has no class 'spiral'" in str(err.value)


def test_bench_draw_prints_the_optimisers_side_by_side(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from dreamstate.engine.tools.cli import main

    assert main(["bench", "draw", "--model", "starter", "--classes", "spiral,dots", "--seconds", "1",
                 "--jitters", "1", "--ellipses", "8", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "batched (16 images a call)" in out and "ratio" in out
    import re

    for name in ("random", "cma", "gradient"):
        assert len(re.findall(rf"^ +{name}\b", out, re.M)) == 2, name
    assert (tmp_path / "spiral_cma_s0.svg").exists() and (tmp_path / "dots_random_s0.png").exists()
    assert (tmp_path / "dots_gradient_s0.png").exists()
    assert main(["bench", "draw", "--model", "starter", "--optimizers", "cma,gradiant", "--seconds", "1"]) == 1
