"""torch-side tools (optional extras): the torchvision GoogLeNet exporter and the benchmark peer.

These need PyTorch (the `export` / `bench` extras); without it they are reported as skipped
with the reason, never silently passed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from dreamstate.engine.core.errors import ModelError
from dreamstate.engine.tools.cli import main as cli_main
from dreamstate.models.compiler import compile_step
from dreamstate.models.graph import load_forward

torch = pytest.importorskip("torch", reason="needs the 'export'/'bench' extra: pip install torch")


class Payload:
    """Stands for code smuggled into a .pth file."""


@pytest.fixture(scope="module")
def googlenet_weights(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    from dreamstate.engine.tools.export_torchvision import build_googlenet

    torch.manual_seed(0)
    model = build_googlenet()
    for mod in model.modules():  # non-trivial BatchNorm statistics, so folding BN is exercised
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.running_mean.uniform_(-0.2, 0.2)
            mod.running_var.uniform_(0.5, 2.0)
            mod.weight.data.uniform_(0.5, 1.5)
    path = tmp_path_factory.mktemp("w") / "googlenet.pth"
    torch.save(model.state_dict(), path)
    return path, model.eval()


def test_export_googlenet_and_dream_gradient_matches_torch_autograd(
    googlenet_weights: tuple[Path, object], tmp_path: Path
) -> None:
    weights, model = googlenet_weights
    out = tmp_path / "googlenet-torchvision.onnx"
    assert cli_main(["models", "export-torchvision", "googlenet", "--weights", str(weights), "--out", str(out)]) == 0
    fg = load_forward(out)
    names = {li.name for li in fg.layers()}
    assert {"inception3a", "inception4c", "inception5b"} <= names
    step, _ = compile_step(fg, ["inception4c", "inception3b"])
    sess = ort.InferenceSession(step.SerializeToString(), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((1, 3, 97, 131)).astype(np.float32)  # odd sizes: ceil_mode pools
    grad, loss = sess.run(["grad", "loss"], {"image": x, "layer_weights": np.array([1.0, 0.5], np.float32)})

    import copy

    acts: dict[str, object] = {}
    m = copy.deepcopy(model).double()  # type: ignore[attr-defined]  # fp64 reference
    m.inception4c.register_forward_hook(lambda _m, _i, o: acts.__setitem__("4c", o))
    m.inception3b.register_forward_hook(lambda _m, _i, o: acts.__setitem__("3b", o))
    xt = torch.from_numpy(x.astype(np.float64)).requires_grad_(True)
    m(xt)
    a4, a3 = acts["4c"], acts["3b"]
    ref_loss = (a4 * a4).mean() / 2 + 0.5 * (a3 * a3).mean() / 2  # type: ignore[operator]
    (ref_grad,) = torch.autograd.grad(ref_loss, xt)
    assert float(loss) == pytest.approx(float(ref_loss.detach()), rel=1e-4)
    ref = ref_grad.numpy()
    # (torch's own fp32 gradient is ~1e-2 away from its fp64 one on this random net; ORT's is not)
    assert np.linalg.norm(grad - ref) <= 1e-5 * np.linalg.norm(ref)
    assert np.abs(grad - ref).max() <= 1e-4 * np.abs(ref).max()


def test_export_refuses_bad_weights(tmp_path: Path) -> None:
    from dreamstate.engine.tools.export_torchvision import export_googlenet

    with pytest.raises(ModelError, match="does not exist"):
        export_googlenet(tmp_path / "none.pth", tmp_path / "o.onnx")
    wrong = tmp_path / "wrong.pth"
    torch.save({"fc.weight": torch.zeros(3, 3)}, wrong)
    with pytest.raises(ModelError, match="does not match torchvision's GoogLeNet"):
        export_googlenet(wrong, tmp_path / "o.onnx")
    pickled = tmp_path / "code.pth"
    torch.save({"obj": Payload()}, pickled)  # arbitrary pickled object: weights_only=True refuses it
    with pytest.raises(ModelError, match="not a loadable torch state dict"):
        export_googlenet(pickled, tmp_path / "o.onnx")


def test_torch_peer_of_the_benchmark_computes_the_same_step(shared_models: Path) -> None:
    from dreamstate.engine.tools.torch_ref import TorchDream, bench_input
    from dreamstate.models.dream import DreamModel

    path = shared_models / "SqueezeNet_fp16.onnx"
    layers = ["fire3/concat", "fire5/concat"]
    dm = DreamModel.load(path, layers, device="cpu")
    peer = TorchDream(load_forward(path), layers)
    x = bench_input(3, 72, 64)
    g_ort, l_ort = dm.step(x)
    g_t, l_t = peer.step(x, [1.0, 1.0])
    assert l_ort == pytest.approx(l_t, rel=1e-4)
    assert np.abs(g_ort - g_t).max() <= 1e-3 * np.abs(g_t).max()
