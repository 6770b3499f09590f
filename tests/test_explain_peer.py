"""Attribution against a peer: LRP-epsilon and gradient x input of a small torch network, exported
to ONNX and compiled by dreamstate, against captum's ``LRP`` and ``InputXGradient`` on the same
torch network. Needs the ``export`` extra (torch, captum); skipped with the reason without it,
like the exporter test."""

from __future__ import annotations

import io
import warnings
from typing import Any

import numpy as np
import pytest

from dreamstate.models.explain import compile_attribution
from dreamstate.models.graph import load_forward

torch = pytest.importorskip("torch", reason="needs the 'export' extra: pip install 'dreamstate[export]'")
captum_attr = pytest.importorskip("captum.attr", reason="needs the 'export' extra: pip install 'dreamstate[export]'")


def _net() -> Any:
    nn = torch.nn

    class Net(nn.Module):
        """conv-relu-conv-relu-average pool-linear: every layer one captum's LRP has a rule for."""

        def __init__(self) -> None:
            super().__init__()
            self.features = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 8, 3, padding=1),
                                          nn.ReLU(), nn.AdaptiveAvgPool2d(1))
            self.fc = nn.Linear(8, 5)

        def forward(self, x: Any) -> Any:
            return self.fc(torch.flatten(self.features(x), 1))

    torch.manual_seed(0)
    return Net().eval()


def _ours(net: Any, x: np.ndarray, method: str, cls: int, eps: float) -> np.ndarray:
    import onnxruntime as ort

    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter is deprecated but needs no onnxscript
        torch.onnx.export(net, torch.from_numpy(x), buf, input_names=["image"], output_names=["logits"],
                          opset_version=18, dynamo=False)
    model, _ = compile_attribution(load_forward(buf.getvalue(), label="torch net"), method, epsilon=eps)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    target = np.zeros((1, 5), np.float32)
    target[0, cls] = 1.0
    out: np.ndarray = sess.run(["attribution"], {"image": x, "target": target})[0]
    return out


@pytest.mark.parametrize("cls", [0, 3])
def test_lrp_eps_and_gxi_match_captum(cls: int) -> None:
    net = _net()
    x = np.random.default_rng(cls).standard_normal((1, 3, 12, 12)).astype(np.float32)
    t = torch.from_numpy(x).requires_grad_(True)
    eps = 1e-6
    peer_gxi = captum_attr.InputXGradient(net).attribute(t, target=cls).detach().numpy()
    np.testing.assert_allclose(_ours(net, x, "gxi", cls, eps), peer_gxi, rtol=1e-4, atol=1e-5 * np.abs(peer_gxi).max())
    from captum.attr._utils.lrp_rules import EpsilonRule

    for layer in (net.features[0], net.features[2], net.features[4], net.fc):
        layer.rule = EpsilonRule(epsilon=eps)
    peer_lrp = captum_attr.LRP(net).attribute(torch.from_numpy(x).requires_grad_(True), target=cls).detach().numpy()
    ours = _ours(net, x, "lrp-eps", cls, eps)
    assert np.abs(peer_lrp).max() > 1e-3
    np.testing.assert_allclose(ours, peer_lrp, rtol=1e-3, atol=1e-4 * np.abs(peer_lrp).max())
