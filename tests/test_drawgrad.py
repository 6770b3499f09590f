"""The gradient search for drawings: the soft raster's gradient against finite differences, the
soft raster against the hard one, the classifier's gradient graph, and the whole chain on the
bundled starter model (real onnxruntime sessions, no stand-ins)."""

from __future__ import annotations

import numpy as np
import pytest

from dreamstate.engine.core.errors import RenderError
from dreamstate.engine.render.drawgrad import GradientSearch, soft_backward, soft_render, upsample2, upsample2_adjoint
from dreamstate.engine.render.drawing import DrawingObjective, make_search, random_drawing, render, run_search
from dreamstate.models.classify import ClassifierModel


@pytest.fixture(scope="module")
def starter() -> ClassifierModel:
    return ClassifierModel.load("starter", device="cpu", threads=2)


@pytest.mark.parametrize("view", [(0.0, 0.0, 1.0, 0.0), (0.05, -0.03, 1.1, 7.0)])
def test_soft_raster_gradient_matches_finite_differences(view: tuple[float, float, float, float]) -> None:
    """Every parameter (centres, axes, angles, soft colour choices, palette) of a 5-ellipse
    drawing, in a plain and in a shifted, scaled, rotated view."""
    theta = np.clip(random_drawing(5, 3), 0.05, 0.95)  # away from the clipped edges of the cube
    dimg = np.random.default_rng(1).normal(size=(24, 24, 3))

    def f(t: np.ndarray) -> float:
        img, _ = soft_render(t, 24, view=view, softness=0.2, tau=0.2)
        return float((img.astype(np.float64) * dimg).sum())

    _img, cache = soft_render(theta, 24, view=view, softness=0.2, tau=0.2)
    grad = soft_backward(cache, dimg)
    eps = 1e-3
    fd = np.array([(f(theta + eps * e) - f(theta - eps * e)) / (2 * eps) for e in np.eye(len(theta))])
    np.testing.assert_allclose(grad, fd, rtol=0.02, atol=0.02 * float(np.abs(fd).max()))
    assert np.abs(fd).min() < np.abs(fd).max() / 10  # not all one value: the check can tell parameters apart


def test_soft_raster_becomes_the_hard_raster() -> None:
    """As softness and the colour temperature shrink, the soft raster approaches OpenCV's
    anti-aliased one (same geometry, same colours, same pixel centres); a soft one is far off."""
    theta = random_drawing(40, 0)
    hard = render(theta, (96, 96))
    sharp, _ = soft_render(theta, 96, softness=0.005, tau=0.005)
    blurred, _ = soft_render(theta, 96, softness=0.3, tau=0.3)
    assert float(np.abs(sharp - hard).mean()) < 0.01
    assert float(np.abs(blurred - hard).mean()) > 4 * float(np.abs(sharp - hard).mean())
    with pytest.raises(RenderError):
        soft_render(theta, 96, softness=0.0)


def test_upsampling_is_cv2_bilinear_and_its_adjoint_is_its_transpose() -> None:
    import cv2

    rng = np.random.default_rng(0)
    x = rng.normal(size=(5, 7, 3)).astype(np.float32)
    y = rng.normal(size=(10, 14, 3)).astype(np.float32)
    up = upsample2(upsample2(x, 0), 1)
    np.testing.assert_allclose(up, cv2.resize(x, (14, 10), interpolation=cv2.INTER_LINEAR), atol=1e-5)
    back = upsample2_adjoint(upsample2_adjoint(y, 1), 0)
    assert back.shape == x.shape
    assert abs(float((up * y).sum()) - float((x * back).sum())) < 1e-3


def test_classifier_gradient_matches_finite_differences(starter: ClassifierModel) -> None:
    """log_prob_grad's log-probabilities equal log_probs, and its gradient (compiled from the
    classifier's graph, through the preprocessing) predicts the change along a smooth direction,
    per image in a batch of 3 with different weights (each image's gradient is the one it gets
    alone)."""
    import cv2

    rng = np.random.default_rng(0)
    s = starter.size
    x = np.stack([cv2.resize(rng.uniform(0.2, 0.8, (8, 8, 3)).astype(np.float32), (s, s)) for _ in range(3)])
    w = np.zeros((3, starter.num_classes), np.float32)
    w[0, 3], w[1, 20], w[2, 5] = 1.0, 1.0, 0.5
    lp, grad = starter.log_prob_grad(x, w)
    np.testing.assert_allclose(lp, starter.log_probs(x), atol=1e-5)
    assert grad.shape == x.shape
    single = starter.log_prob_grad(x[1:2], w[1:2])[1]
    np.testing.assert_allclose(grad[1:2], single, atol=1e-6)  # per-image weights in one batch
    # along the gradient itself the change is |grad| (small steps: the ReLUs make it kinked)
    d = grad / np.linalg.norm(grad)
    eps = 0.003

    def f(y: np.ndarray) -> float:
        return float((starter.log_probs(y).astype(np.float64) * w).sum())

    fd = (f(x + eps * d) - f(x - eps * d)) / (2 * eps)
    assert 0.95 < fd / float(np.linalg.norm(grad)) < 1.05, (fd, float(np.linalg.norm(grad)))


def test_full_chain_gradient_on_the_starter_model(starter: ClassifierModel) -> None:
    """The search's gradient (soft raster at half size, bilinear up, classifier, back) against
    finite differences of the same soft objective along the gradient's direction."""
    obj = DrawingObjective(starter, starter.resolve("spiral"), jitters=2, seed=0)
    search = GradientSearch(obj, random_drawing(12, 0), wobble=0.0, soft0=0.2, soft1=0.2, tau0=0.2, tau1=0.2)
    theta = np.clip(random_drawing(12, 5), 0.05, 0.95)
    value, grad = search.gradient(theta)
    d = grad / np.linalg.norm(grad)
    eps = 1e-3
    fd = (search.gradient(theta + eps * d)[0] - search.gradient(theta - eps * d)[0]) / (2 * eps)
    assert 0.95 < fd / float(np.linalg.norm(grad)) < 1.05, (fd, float(np.linalg.norm(grad)))
    assert value < 0.0 and fd > 0.1


def test_gradient_search_is_reproducible_and_raises_the_hard_score(starter: ClassifierModel) -> None:
    target = starter.resolve("spiral")
    runs = []
    for _ in range(2):
        obj = DrawingObjective(starter, target, jitters=2, seed=3)
        search = make_search("gradient", obj, random_drawing(20, 3), seed=3)
        assert isinstance(search, GradientSearch)
        before = search.best_score
        runs.append(run_search(search, evaluations=30))
        assert search.gradients == 29 and runs[-1].score > before + 0.5
        # the reported score is the objective's own (hard raster), as for the other optimisers
        assert runs[-1].score == pytest.approx(float(obj.score(runs[-1].best[None])[0]), abs=1e-6)
    np.testing.assert_array_equal(runs[0].best, runs[1].best)
