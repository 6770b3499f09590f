"""Show files that are broken or hostile: one clear error each, and check and run agree.

``check`` and ``run`` go through the same loader, so every case is run through both commands
as a user would (real subprocesses), and must give exit code 1 with the same message and no
traceback.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dreamstate.engine.core.errors import ShowError
from dreamstate.engine.runtime.showfile import load_show

REPO = Path(__file__).resolve().parents[1]
SCENES = '[scenes.calm]\nlayers = { block10 = 1.0 }\n[scenes.attract]\nlayers = { block9 = 1.0 }\n'


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "dreamstate", *args], cwd=cwd, text=True, capture_output=True,
                          timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)}, check=False)


def _both(show: Path) -> tuple[str, str]:
    """The error ``check`` prints and the one ``run`` prints (both must fail cleanly)."""
    check = _cli("check", str(show), cwd=show.parent)
    run = _cli("run", str(show), "--seconds", "1", "--output", "none", cwd=show.parent)
    for res in (check, run):
        assert res.returncode == 1, res.stderr[-2000:]
        assert "Traceback" not in res.stderr, res.stderr[-2000:]
    return check.stderr, run.stderr


@pytest.mark.parametrize(("content", "says"), [
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "binary file"),
    ("[show]\nname = \"Ruhe-Phase, \xc4pfel\"\n".encode("latin-1"), "not UTF-8 text"),
    (b"a = " + b"[" * 5000 + b"]" * 5000 + b"\n", "nested deeper"),
    (b"", "is empty"),
    (b"   \n# only a comment\n", "is empty"),
])
def test_files_that_are_not_show_text_give_one_clear_error(tmp_path: Path, content: bytes, says: str) -> None:
    show = tmp_path / "show.toml"
    show.write_bytes(content)
    with pytest.raises(ShowError, match=says):
        load_show(show)
    check, run = _both(show)
    assert says in check and says in run


def test_a_show_with_no_scenes_is_refused_by_check_as_by_run(tmp_path: Path) -> None:
    show = tmp_path / "show.toml"
    show.write_text("[show]\nname = \"x\"\n")
    check, run = _both(show)
    assert "defines no scenes" in check and "defines no scenes" in run


@pytest.mark.parametrize("model", ["/elsewhere/tanh.bin", "../outside/model.bin", "../outside/model.onnx"])
def test_a_model_path_may_not_leave_the_show_folder(tmp_path: Path, shared_models: Path, model: str) -> None:
    folder = tmp_path / "show"
    folder.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    data = (shared_models / "SqueezeNet_fp16.onnx").read_bytes()
    (outside / "model.bin").write_bytes(data)
    (outside / "model.onnx").write_bytes(data)
    show = folder / "show.toml"
    show.write_text(f'[show]\nmodel = "{model}"\n[scenes.calm]\nlayers = {{ "fire5/concat" = 1.0 }}\n'
                    '[scenes.attract]\nlayers = { "fire5/concat" = 1.0 }\n')
    with pytest.raises(ShowError, match=r"show\.model"):
        load_show(show)


def test_a_model_inside_the_show_folder_and_a_symlink_out_of_it(tmp_path: Path, shared_models: Path) -> None:
    folder = tmp_path / "show"
    folder.mkdir()
    (folder / "net.onnx").write_bytes((shared_models / "SqueezeNet_fp16.onnx").read_bytes())
    (folder / "link.onnx").symlink_to(shared_models / "SqueezeNet_fp16.onnx")
    body = '[scenes.calm]\nlayers = { "fire5/concat" = 1.0 }\n[scenes.attract]\nlayers = { "fire5/concat" = 1.0 }\n'
    show = folder / "show.toml"
    show.write_text('[show]\nmodel = "net.onnx"\n' + body)
    assert load_show(show).show.show.model == "net.onnx"
    show.write_text('[show]\nmodel = "link.onnx"\n' + body)
    with pytest.raises(ShowError, match=r"show\.model"):
        load_show(show)


def _tanh_model(path: Path) -> None:
    """A tiny image model whose path to its layer has a Tanh (no backward rule)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((4, 3, 3, 3)).astype(np.float32), "w")
    nodes = [helper.make_node("Conv", ["image", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Tanh", ["c"], ["t"], name="squash"),
             helper.make_node("Relu", ["t"], ["feat"], name="feat")]
    image = helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 32, 32])
    graph = helper.make_graph(nodes, "tanh", [image], [helper.make_tensor_value_info("feat", TensorProto.FLOAT, None)],
                              [w])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10), path)
    path.with_suffix(".json").write_text('{"preprocessing": {"range": [0, 1]}, "recommended_layers": ["feat"]}')


def test_check_compiles_the_dream_step_so_run_never_crash_loops(tmp_path: Path) -> None:
    """A model with an op the compiler has no rule for: check says so, and run refuses alike."""
    _tanh_model(tmp_path / "tanh.onnx")
    show = tmp_path / "show.toml"
    show.write_text('[show]\nmodel = "tanh.onnx"\n[scenes.calm]\nlayers = { feat = 1.0 }\n'
                    '[scenes.attract]\nlayers = { feat = 1.0 }\n')
    with pytest.raises(ShowError, match=r"op Tanh .*no backward rule"):
        load_show(show)
    check, run = _both(show)
    assert "Tanh" in check and "Tanh" in run


def test_check_reports_types_paths_and_images_in_one_run(tmp_path: Path) -> None:
    (tmp_path / "bad.png").write_bytes(b"not an image at all")
    (tmp_path / "a folder").mkdir()
    show = tmp_path / "show.toml"
    show.write_text('[show]\nimages = ["missing.png", "bad.png", "a folder"]\n[output]\nfps = "fast"\n'
                    '[osc]\nenabled = 1\n[mqtt]\nenabled = "yes"\n' + SCENES)
    with pytest.raises(ShowError) as err:
        load_show(show)
    keys = [k for k, _ in err.value.problems]
    assert {"output.fps", "osc.enabled", "mqtt.enabled", "show.images[0]", "show.images[1]",
            "show.images[2]"} <= set(keys), keys
    text = str(err.value)
    assert "not found" in text and "is a folder" in text and "not a readable image" in text
    assert "true or false" in text


def test_every_path_key_in_the_schema_is_kept_inside_the_show_folder(tmp_path: Path) -> None:
    """Whatever names a file (file, path, save, mask, guide, image(s), *_file), a value that
    leaves the show folder is refused with its key path: a new path key cannot slip past."""
    from pydantic import BaseModel

    from dreamstate.engine.core.errors import ShowError
    from dreamstate.engine.core.show import SceneConfig, Show
    from dreamstate.engine.runtime.showfile import load_show

    names = {"file", "path", "save", "mask", "guide", "image", "images", "ca_file", "certfile", "keyfile",
             "password_file"}
    keys: list[str] = []

    def walk(prefix: str, model: type[BaseModel]) -> None:
        for name, field in model.model_fields.items():
            ann = field.annotation
            if isinstance(ann, type) and issubclass(ann, BaseModel):
                walk(f"{prefix}{name}.", ann)
            elif name in names:
                keys.append(prefix + name)

    walk("", Show)
    walk("scenes.calm.", SceneConfig)
    assert len(keys) >= 13, keys
    for key in keys:
        table, _, leaf = key.rpartition(".")
        value = '["../outside.png"]' if leaf == "images" else '"../outside.png"'
        extra = ""
        if table == "mqtt":
            extra = "enabled = true\ntls = true\n" if leaf != "password_file" else "enabled = true\n"
        if table == "device":
            extra = 'kind = "replay"\n'
        toml = f"[{table}]\n{extra}{leaf} = {value}\n"
        if not table.startswith("scenes"):
            toml += "[scenes.calm]\nlayers = { block2 = 1.0 }\n[scenes.attract]\nlayers = { block2 = 1.0 }\n"
        else:
            toml = ("[scenes.attract]\nlayers = { block2 = 1.0 }\n[scenes.calm]\nlayers = { block2 = 1.0 }\n"
                    f"{leaf} = {value}\n")
        toml = toml.replace("[show]\n", '[show]\nmodel = "starter"\n') if table == "show" \
            else '[show]\nmodel = "starter"\n' + toml
        (tmp_path / "show.toml").write_text(toml)
        with pytest.raises(ShowError) as info:
            load_show(tmp_path / "show.toml", deep=False)
        want = f"{key}[0]" if leaf == "images" else key
        assert want in str(info.value) and "outside the show folder" in str(info.value), (key, str(info.value))


@pytest.mark.parametrize(("toml", "key"), [
    ('[scenes.calm]\nzoom = "1.01"\nlayers = { block2 = 1.0 }', "scenes.calm.zoom"),
    ('[scenes.calm]\noctaves = "3"\nlayers = { block2 = 1.0 }', "scenes.calm.octaves"),
    ('[scenes.calm]\nlayers = { block2 = "1.0" }', "scenes.calm.layers"),
    ('[osc]\nlisten_port = "9000"', "osc.listen_port"),
    ('[output]\nsize = ["1280", 720]', "output.size"),
    ('[signal]\nhop_s = "0.25"', "signal.hop_s"),
])
def test_numbers_written_as_text_are_refused(tmp_path: Path, toml: str, key: str) -> None:
    """Show files stay strictly typed: a quoted number is a mistake worth a message (pydantic
    would quietly convert it, while `enabled = "true"` was already refused)."""
    from dreamstate.engine.core.errors import ShowError
    from dreamstate.engine.runtime.showfile import load_show

    base = '[show]\nmodel = "starter"\n[scenes.attract]\nlayers = { block2 = 1.0 }\n'
    if "[scenes.calm]" not in toml:
        base += "[scenes.calm]\nlayers = { block2 = 1.0 }\n"
    (tmp_path / "show.toml").write_text(base + toml + "\n")
    with pytest.raises(ShowError) as info:
        load_show(tmp_path / "show.toml", deep=False)
    assert key in str(info.value) and "without quotes" in str(info.value), str(info.value)
