"""DreamModel (the renderer's API), the registry, the compiled-graph cache, fetch and the CLI."""

from __future__ import annotations

import hashlib
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from dreamstate.engine.core.errors import ModelError, NetworkError
from dreamstate.engine.tools.cli import main as cli_main
from dreamstate.models import fetch, registry
from dreamstate.models.dream import DreamModel
from dreamstate.models.registry import ModelSpec, Preprocess


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv("DREAMSTATE_CACHE", str(root))
    return root


@pytest.fixture(scope="module")
def squeeze(shared_models: Path, tmp_path_factory: pytest.TempPathFactory) -> DreamModel:
    return DreamModel.load(
        shared_models / "SqueezeNet_fp16.onnx",
        ["fire3/concat", "fire5/concat"],
        device="cpu",
        threads=2,
        cache_dir=tmp_path_factory.mktemp("c"),
    )


def test_pixel_spaces_roundtrip_and_bgr_mean(squeeze: DreamModel) -> None:
    rgb = np.random.default_rng(0).uniform(0, 1, (5, 7, 3)).astype(np.float32)
    x = squeeze.to_model_space(rgb)
    assert x.shape == (1, 3, 5, 7) and x.dtype == np.float32
    # BGR, 0..255 minus (104, 117, 123)
    np.testing.assert_allclose(x[0, 0], rgb[:, :, 2] * 255 - 104, rtol=1e-6, atol=1e-4)
    np.testing.assert_allclose(x[0, 2], rgb[:, :, 0] * 255 - 123, rtol=1e-6, atol=1e-4)
    np.testing.assert_allclose(squeeze.from_model_space(x), rgb, atol=1e-6)
    assert squeeze.value_range == (0.0, 255.0)
    big = x * 10
    squeeze.clip(big)
    back = squeeze.from_model_space(big)
    assert back.min() >= -1e-6 and back.max() <= 1 + 1e-6


def test_step_weights_by_name_and_errors(squeeze: DreamModel) -> None:
    x = squeeze.to_model_space(np.random.default_rng(1).uniform(0, 1, (48, 64, 3)).astype(np.float32))
    g_all, l_all = squeeze.step(x)
    g3, l3 = squeeze.step(x, {"fire3/concat": 1.0})
    g5, l5 = squeeze.step(x, {"fire5/concat_1": 1.0})  # tensor names work as well
    assert g_all.shape == x.shape
    assert l_all == pytest.approx(l3 + l5, rel=1e-5)
    np.testing.assert_allclose(g_all, g3 + g5, rtol=1e-4, atol=1e-5 * np.abs(g_all).max())
    with pytest.raises(ModelError, match=r"'fire7/concat' is not compiled.*fire3/concat"):
        squeeze.step(x, {"fire7/concat": 1.0})
    with pytest.raises(ModelError, match="channel weights given"):
        squeeze.step(x, channel_weights={"fire3/concat": np.ones(128, np.float32)})
    with pytest.raises(ModelError, match=r"\(N, C, H, W\)"):
        squeeze.step(x[0])


def test_features_and_guide(shared_models: Path, squeeze: DreamModel) -> None:
    rng = np.random.default_rng(2)
    x = squeeze.to_model_space(rng.uniform(0, 1, (64, 64, 3)).astype(np.float32))
    guide_img = squeeze.to_model_space(rng.uniform(0, 1, (40, 56, 3)).astype(np.float32))
    feats = squeeze.features(guide_img)
    assert set(feats) == {"fire3/concat", "fire5/concat"} and feats["fire3/concat"].shape[1] == 128
    guided = DreamModel.load(
        shared_models / "SqueezeNet_fp16.onnx", ["fire3/concat", "fire5/concat"], guide=True, device="cpu"
    )
    g, loss = guided.step(x, guide=feats)
    assert g.shape == x.shape and loss > 0
    with pytest.raises(ModelError, match="guide features for layer 'fire5/concat' missing"):
        guided.step(x, guide={"fire3/concat": feats["fire3/concat"]})
    with pytest.raises(ModelError, match="no guide features"):
        guided.step(x)


def test_channels_objective_runtime(shared_models: Path) -> None:
    m = DreamModel.load(shared_models / "SqueezeNet_fp16.onnx", ["fire4/concat"], objective="channels", device="cpu")
    x = m.to_model_space(np.random.default_rng(3).uniform(0, 1, (48, 48, 3)).astype(np.float32))
    only = np.zeros(256, np.float32)
    only[10] = 1.0
    _g_one, l_one = m.step(x, channel_weights={"fire4/concat": only})
    _g_all, l_all = m.step(x)  # default: every channel weight 1 == the layers objective
    assert 0 < l_one < l_all
    with pytest.raises(ModelError, match="have 3 values, the layer has 256"):
        m.step(x, channel_weights={"fire4/concat": np.ones(3, np.float32)})


def test_compiled_graph_cache(shared_models: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cache = tmp_path / "c2"
    a = DreamModel.load(shared_models / "SqueezeNet_fp16.onnx", ["fire2/concat"], device="cpu", cache_dir=cache)
    assert a.step_path is not None and a.step_path.exists() and a.step_path.parent == cache / "compiled"
    stamp = a.step_path.stat().st_mtime_ns
    with caplog.at_level("INFO", logger="dreamstate.models"):
        b = DreamModel.load(shared_models / "SqueezeNet_fp16.onnx", ["fire2/concat"], device="cpu", cache_dir=cache)
    assert b.step_path == a.step_path and b.step_path.stat().st_mtime_ns == stamp
    assert any("from cache" in r.getMessage() for r in caplog.records)
    c = DreamModel.load(shared_models / "SqueezeNet_fp16.onnx", ["fire3/concat"], device="cpu", cache_dir=cache)
    assert c.step_path != a.step_path  # the key includes the layer set
    # a corrupt cache entry is recompiled, not fatal
    assert c.step_path is not None
    c.step_path.write_bytes(b"not onnx")
    d = DreamModel.load(shared_models / "SqueezeNet_fp16.onnx", ["fire3/concat"], device="cpu", cache_dir=cache)
    x = np.zeros((1, 3, 32, 32), np.float32)
    assert d.step(x)[0].shape == x.shape


def test_default_cache_follows_env(shared_models: Path, _cache: Path) -> None:
    m = DreamModel.load(shared_models / "SqueezeNet_fp16.onnx", ["fire2/concat"], device="cpu")
    assert m.step_path is not None and _cache in m.step_path.parents


def test_device_choice(shared_models: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("INFO", logger="dreamstate.models"):
        m = DreamModel.load(shared_models / "SqueezeNet_fp16.onnx", ["fire2/concat"], device="auto")
    expected = (
        "CUDAExecutionProvider" if "CUDAExecutionProvider" in ort.get_available_providers() else "CPUExecutionProvider"
    )
    assert m.provider == expected
    assert any(getattr(r, "provider", None) == expected for r in caplog.records)
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        with pytest.raises(ModelError, match="no CUDA provider"):
            DreamModel.load(shared_models / "SqueezeNet_fp16.onnx", ["fire2/concat"], device="cuda")


NO_CUDA = pytest.mark.skipif("CUDAExecutionProvider" in ort.get_available_providers(),
                             reason="this onnxruntime has CUDA: the refusal cannot happen here")


@NO_CUDA
def test_device_cuda_without_cuda_keeps_the_cached_step(tmp_path: Path) -> None:
    """A missing CUDA provider is a configuration error, not a corrupt cache entry: the cached
    step stays (it was deleted and recompiled on every render-stage retry before)."""
    m = DreamModel.load("starter", device="cpu", cache_dir=tmp_path)
    assert m.step_path is not None
    before = m.step_path.stat().st_mtime_ns
    with pytest.raises(ModelError, match="no CUDA provider"):
        DreamModel.load("starter", device="cuda", cache_dir=tmp_path)
    assert m.step_path.stat().st_mtime_ns == before


@NO_CUDA
@pytest.mark.usefixtures("restore_logging")
def test_a_cuda_show_without_cuda_is_refused_before_it_starts(tmp_path: Path,
                                                              capfd: pytest.CaptureFixture[str]) -> None:
    """docs/gpu.md: device = "cuda" refuses to start. It used to pass `check`, then retry the
    render stage for the whole run with no picture, and exit 0."""
    show = tmp_path / "show.toml"
    base = ('[show]\nmodel = "starter"\n[scenes.calm]\nlayers = { block2 = 1.0 }\n'
            '[scenes.attract]\nlayers = { block2 = 1.0 }\n[output]\nkind = "none"\n')
    show.write_text(base + 'device = "cuda"\n')
    assert cli_main(["check", str(show)]) == 1
    err = capfd.readouterr().err
    assert 'output.device: output.device = "cuda" asks for CUDA' in err and "dreamstate[gpu]" in err
    show.write_text(base)
    assert cli_main(["run", str(show), "--device", "cuda", "--seconds", "5"]) == 1
    assert "output.device: --device cuda asks for CUDA" in capfd.readouterr().err


def test_registry_names_and_unknown_model() -> None:
    for name in ("googlenet", "squeezenet1.0", "squeezenet1.1", "googlenet-torchvision", "starter"):
        assert name in registry.names()
    for spec in registry.REGISTRY.values():
        # classifiers name their dream layers; style models (image-to-image) have none
        assert (bool(spec.layers) if spec.kind == "classifier" else spec.kind == "style" and not spec.layers)
        assert spec.url is None or spec.url.startswith("https://")
        assert spec.sha256 is None or len(spec.sha256) == 64
    with pytest.raises(ModelError, match=r"unknown model 'alexnet'.*squeezenet1\.0"):
        registry.get_spec("alexnet")
    with pytest.raises(ModelError, match=r"not downloaded yet.*models fetch googlenet"):
        DreamModel.load("googlenet")


def test_starter_entry_missing_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "STARTER_JSON", tmp_path / "nope" / "model.json")
    with pytest.raises(ModelError, match=r"bundled model 'starter' is missing its description"):
        DreamModel.load("starter")


def test_sidecar_json_sets_preprocessing(shared_models: Path, tmp_path: Path) -> None:
    import json

    local = tmp_path / "digits.onnx"
    local.symlink_to(shared_models / "mnist.onnx")
    (tmp_path / "digits.json").write_text(
        json.dumps(
            {
                "layers": ["ReLU114"],
                "channels": 1,
                "preprocessing": {"mean": [10.0], "std": [2.0], "bgr": False, "value_range": [0, 255]},
            }
        )
    )
    m = DreamModel.load(local, device="cpu")
    assert m.layers == ("ReLU114",)
    x = m.to_model_space(np.full((28, 28, 3), 0.5, np.float32))
    assert x.shape == (1, 1, 28, 28)
    np.testing.assert_allclose(x, (127.5 - 10.0) / 2.0, rtol=1e-5)


# ------------------------------------------------------------------------------------ fetch
class _Handler(http.server.BaseHTTPRequestHandler):
    payload = b""

    def do_GET(self) -> None:
        if self.path != "/model.onnx":
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.payload)))
        self.end_headers()
        self.wfile.write(self.payload)

    def log_message(self, format: str, *args: object) -> None:
        return


@pytest.fixture
def server(shared_models: Path) -> Iterator[tuple[str, bytes]]:
    data = (shared_models / "mnist.onnx").read_bytes()
    _Handler.payload = data
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", data
    finally:
        httpd.shutdown()
        httpd.server_close()
        t.join(timeout=5)


def _spec(url: str, sha: str | None) -> ModelSpec:
    return ModelSpec(
        name="digits", title="t", filename="digits.onnx", url=url, sha256=sha, preprocess=Preprocess(), layers=("x",)
    )


def test_fetch_downloads_and_verifies(server: tuple[str, bytes], _cache: Path) -> None:
    url, data = server
    sha = hashlib.sha256(data).hexdigest()
    path = fetch.fetch(_spec(f"{url}/model.onnx", sha), progress=False)
    assert path == _cache / "models" / "digits.onnx" and path.read_bytes() == data
    assert fetch.fetch(_spec(f"{url}/model.onnx", sha), progress=False) == path  # present: verified only


def test_fetch_checksum_mismatch_keeps_nothing(server: tuple[str, bytes], _cache: Path) -> None:
    url, _ = server
    with pytest.raises(ModelError, match="expected 0000"):
        fetch.fetch(_spec(f"{url}/model.onnx", "0" * 64), progress=False)
    assert not (_cache / "models" / "digits.onnx").exists()
    assert not list((_cache / "models").glob("*.part"))


def test_fetch_unreachable_explains_manual_placement(_cache: Path) -> None:
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now: connection refused
    spec = registry.get_spec("squeezenet1.0")
    spec = ModelSpec(**{**spec.__dict__, "url": f"http://127.0.0.1:{port}/squeezenet1.0-8.onnx"})
    with pytest.raises(NetworkError) as info:
        fetch.fetch(spec, progress=False, timeout_s=5)
    msg = str(info.value)
    assert "unreachable" in msg and str(_cache / "models" / "squeezenet1.0-8.onnx") in msg
    assert registry.REGISTRY["squeezenet1.0"].sha256 in msg  # type: ignore[operator]


# -------------------------------------------------------------------------------------- CLI
def test_cli_layers_and_compile(shared_models: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["models", "layers", str(shared_models / "SqueezeNet_fp16.onnx")]) == 0
    out = capsys.readouterr().out
    assert "fire5/concat*" in out and "256" in out and "receptive field" in out
    step = tmp_path / "step.onnx"
    assert (
        cli_main(["models", "compile", str(shared_models / "mnist.onnx"), "--objective", "class", "--out", str(step)])
        == 0
    )
    sess = ort.InferenceSession(str(step), providers=["CPUExecutionProvider"])
    assert {i.name for i in sess.get_inputs()} == {"Input3", "layer_weights", "channel_weights_0"}
    assert [o.name for o in sess.get_outputs()] == ["grad", "loss"]
    assert cli_main(["models", "compile", str(shared_models / "mnist.onnx"), "--layers", "Nope"]) == 1
    assert cli_main(["models", "fetch", "nonexistent"]) == 1


def _starter_like(folder: Path) -> None:
    """A tiny model + model.json in the starter model's schema (models/starter/train.py)."""
    import json

    from tests.test_compiler_helpers import G

    g = G((1, 3, 16, 16), seed=1)
    h = g.op("Div", [g.op("Sub", ["x", g.c(np.full((1, 3, 1, 1), 0.4, np.float32))]), g.c(np.full((1, 3, 1, 1), 0.25))])
    b1 = g.op("Relu", [g.conv(str(h), 3, 4, 3, pads=[1, 1, 1, 1])])
    b2 = g.op(
        "Relu", [g.conv(str(g.op("MaxPool", [b1], kernel_shape=[2, 2], strides=[2, 2])), 4, 6, 3, pads=[1, 1, 1, 1])]
    )
    data = g.model(str(b2))
    (folder / "starter.onnx").write_bytes(data)
    meta = {
        "name": "starter",
        "file": "starter.onnx",
        "sha256": hashlib.sha256(data).hexdigest(),
        "input": "x",
        "preprocess": {"mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0], "bgr": False, "range": [0, 1]},
        "layers": {b1: {"channels": 4}, b2: {"channels": 6}},
        "recommended_layers": [b2, b1],
    }
    (folder / "model.json").write_text(json.dumps(meta))


def test_starter_schema_is_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _starter_like(tmp_path)
    monkeypatch.setattr(registry, "STARTER_JSON", tmp_path / "model.json")
    m = DreamModel.load("starter", device="cpu")
    assert m.name == "starter" and len(m.layers) == 2 and m.value_range == (0.0, 1.0)
    rgb = np.random.default_rng(0).uniform(0, 1, (20, 24, 3)).astype(np.float32)
    x = m.to_model_space(rgb)
    np.testing.assert_allclose(x[0].transpose(1, 2, 0), rgb, rtol=1e-6)  # fed as is: graph normalises
    g, loss = m.step(x)
    assert g.shape == x.shape and loss > 0


def test_real_starter_model_dreams() -> None:
    if not registry.STARTER_JSON.exists():
        pytest.skip("models/starter/model.json is not built yet (helper H5 ships it)")
    m = DreamModel.load("starter", device="cpu")
    assert m.layers and set(m.layers) <= {"block1", "block2", "block3", "block4"}
    from sklearn.datasets import load_sample_image

    x = m.to_model_space(load_sample_image("flower.jpg")[::4, ::4].astype(np.float32) / 255)
    losses = []
    for _ in range(6):
        g, loss = m.step(x)
        losses.append(loss)
        x += 0.01 / (np.abs(g).mean() + 1e-12) * g
        m.clip(x)
    assert losses[-1] > losses[0]


def test_bench_dream_reports_a_failing_torch_child_at_once(tmp_path: Path, shared_models: Path) -> None:
    """The torch side dies (here: no torch, or a file it cannot read): its own message comes
    back at once, not 'no answer within 300 s'."""
    import time

    from dreamstate.engine.tools.bench_dream import TorchPeer

    t0 = time.monotonic()
    with pytest.raises(RuntimeError, match="torch reference process failed") as err:
        TorchPeer(str(tmp_path / "missing.onnx"), ["fire5/concat"], 1, tmp_path)
    assert time.monotonic() - t0 < 60
    assert "PyTorch is not installed" in str(err.value) or "does not exist" in str(err.value)


def test_cudnn_conv_algo_search_is_heuristic_unless_the_show_says(shared_models: Path, tmp_path: Path) -> None:
    """The CUDA provider is asked for HEURISTIC by default (DEFAULT is slow in onnxruntime >=
    1.20, onnxruntime#22705); a show can choose EXHAUSTIVE; anything else is refused, in the
    show file and in code. Where CUDA exists (-m gpu) the session really carries the option."""
    from dreamstate.engine.core.errors import ShowError
    from dreamstate.engine.core.show import read_show
    from dreamstate.models.session import cuda_provider

    assert cuda_provider() == ("CUDAExecutionProvider",
                               {"cudnn_conv_algo_search": "HEURISTIC", "do_copy_in_default_stream": "1"})
    assert cuda_provider("EXHAUSTIVE")[1]["cudnn_conv_algo_search"] == "EXHAUSTIVE"
    with pytest.raises(ModelError, match="cudnn_conv_algo_search 'FAST'"):
        cuda_provider("FAST")
    with pytest.raises(ModelError, match="cudnn_conv_algo_search"):
        DreamModel.load(shared_models / "SqueezeNet_fp16.onnx", ["fire2/concat"], device="cpu",
                        conv_algo_search="FAST")
    show = tmp_path / "s.toml"
    scene = '[scenes.calm]\nlayers = { "fire2/concat" = 1.0 }\n[scenes.attract]\nlayers = { "fire2/concat" = 1.0 }\n'
    show.write_text(scene + '[output]\ncudnn_conv_algo_search = "EXHAUSTIVE"\n')
    assert read_show(show).show.output.cudnn_conv_algo_search == "EXHAUSTIVE"
    show.write_text(scene + '[output]\ncudnn_conv_algo_search = "fastest"\n')
    with pytest.raises(ShowError, match="cudnn_conv_algo_search"):
        read_show(show)


@pytest.mark.gpu
def test_the_cuda_session_carries_the_search_option(shared_models: Path) -> None:
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("no CUDA provider: pip install 'dreamstate[gpu]' on a machine with a GPU")
    m = DreamModel.load(shared_models / "SqueezeNet_fp16.onnx", ["fire2/concat"], device="cuda",
                        conv_algo_search="EXHAUSTIVE")
    opts = m._session.get_provider_options()["CUDAExecutionProvider"]
    assert opts["cudnn_conv_algo_search"] == "EXHAUSTIVE"
