"""Any image a user may drop into a show folder: every colour mode, bit depth and container a
camera, phone or editor writes loads with the right colours and orientation, or is refused
with a clear message. Files are made here with Pillow and OpenCV, as those tools write them."""

from __future__ import annotations

import io
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from dreamstate.engine.core.errors import RenderError
from dreamstate.engine.core.images import load_image

# 32 x 16 reference: top-left red, top-right green, bottom-left blue, bottom-right white
REF = np.zeros((16, 32, 3), np.uint8)
REF[:8, :16] = (255, 0, 0)
REF[:8, 16:] = (0, 255, 0)
REF[8:, :16] = (0, 0, 255)
REF[8:, 16:] = (255, 255, 255)
GREY = (REF.astype(np.float64) @ [0.299, 0.587, 0.114]).round().astype(np.uint8)


def _quadrants(rgb: np.ndarray) -> np.ndarray:
    """The mean colour (0..255) of each quadrant's centre, (4, 3)."""
    h, w = rgb.shape[:2]
    rows = (slice(h // 4 - 1, h // 4 + 2), slice(3 * h // 4 - 1, 3 * h // 4 + 2))
    cols = (slice(w // 4 - 1, w // 4 + 2), slice(3 * w // 4 - 1, 3 * w // 4 + 2))
    cells = [rgb[r, c] for r in rows for c in cols]
    return np.array([c.reshape(-1, 3).mean(axis=0) * 255.0 for c in cells])


def _expected(grey: bool) -> np.ndarray:
    src = np.repeat(GREY[:, :, None], 3, axis=2) if grey else REF
    return _quadrants(src.astype(np.float32) / 255.0)


def _pil(mode_image: Image.Image, path: Path, **kw: object) -> Path:
    mode_image.save(path, **kw)
    return path


CASES: dict[str, tuple[str, bool, float]] = {}  # name -> (how, greyscale?, tolerance 0..255)


def make(name: str, tmp: Path) -> Path:
    rgb = Image.fromarray(REF, "RGB")
    grey = Image.fromarray(GREY, "L")
    if name == "png-rgb":
        return _pil(rgb, tmp / "a.png")
    if name == "png-rgba-opaque":
        return _pil(rgb.convert("RGBA"), tmp / "a.png")
    if name == "png-palette":
        return _pil(rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=8), tmp / "a.png")
    if name == "png-grey-8":
        return _pil(grey, tmp / "a.png")
    if name == "png-grey-16":
        path = tmp / "a.png"  # single-channel 16-bit, as scientific and RAW tools write it
        cv2.imwrite(str(path), GREY.astype(np.uint16) * 257)
        return path
    if name == "png-rgb-16":  # 48-bit colour, as written by OpenCV and RAW converters
        path = tmp / "a.png"
        cv2.imwrite(str(path), cv2.cvtColor(REF, cv2.COLOR_RGB2BGR).astype(np.uint16) * 257)
        return path
    if name == "png-la":
        return _pil(grey.convert("LA"), tmp / "a.png")
    if name == "bmp-1bit":
        bw = Image.fromarray(np.where(GREY > 127, 255, 0).astype(np.uint8), "L").convert("1")
        return _pil(bw, tmp / "a.bmp")
    if name == "jpeg-rgb":
        return _pil(rgb, tmp / "a.jpg", quality=95)
    if name == "jpeg-cmyk":
        return _pil(rgb.convert("CMYK"), tmp / "a.jpg", quality=95)
    if name == "jpeg-grey":
        return _pil(grey, tmp / "a.jpg", quality=95)
    if name == "tiff-cmyk":
        return _pil(rgb.convert("CMYK"), tmp / "a.tif")
    if name == "tiff-float":
        return _pil(Image.fromarray(GREY.astype(np.float32) / 255.0, "F"), tmp / "a.tif")
    if name == "tiff-int32":
        return _pil(Image.fromarray(GREY.astype(np.int32) * 257, "I"), tmp / "a.tif")
    if name == "tiff-multipage":
        path = tmp / "a.tif"
        rgb.save(path, save_all=True, append_images=[Image.new("RGB", (32, 16), "black")])
        return path
    if name == "webp":
        return _pil(rgb, tmp / "a.webp", lossless=True)
    if name == "gif-animated":
        path = tmp / "a.gif"
        rgb.save(path, save_all=True, append_images=[Image.new("RGB", (32, 16), "black")], duration=100)
        return path
    if name == "ppm":
        return _pil(rgb, tmp / "a.ppm")
    if name == "ico":
        return _pil(rgb.resize((32, 32)).resize((32, 16)), tmp / "a.png")
    if name.startswith("jpeg-exif-orientation-"):
        # what a phone held sideways writes: the pixels stored rotated, and the EXIF tag that
        # tells viewers how to turn them back
        tag = int(name.rsplit("-", 1)[1])
        stored = {3: rgb.transpose(Image.Transpose.ROTATE_180), 6: rgb.transpose(Image.Transpose.ROTATE_90),
                  8: rgb.transpose(Image.Transpose.ROTATE_270), 2: rgb.transpose(Image.Transpose.FLIP_LEFT_RIGHT)}[tag]
        exif = Image.Exif()
        exif[0x0112] = tag
        return _pil(stored, tmp / "a.jpg", quality=95, exif=exif.tobytes())
    raise AssertionError(name)


GREY_CASES = {"png-grey-8", "png-grey-16", "png-la", "bmp-1bit", "jpeg-grey", "tiff-float", "tiff-int32"}
LOSSY = {"jpeg-rgb", "jpeg-cmyk", "jpeg-grey", "jpeg-exif-orientation-3", "jpeg-exif-orientation-6",
         "jpeg-exif-orientation-8", "jpeg-exif-orientation-2", "png-palette", "gif-animated", "ico"}
NAMES = ["png-rgb", "png-rgba-opaque", "png-palette", "png-grey-8", "png-grey-16", "png-rgb-16", "png-la",
         "bmp-1bit", "jpeg-rgb", "jpeg-cmyk", "jpeg-grey", "tiff-cmyk", "tiff-float", "tiff-int32", "tiff-multipage",
         "webp", "gif-animated", "ppm", "jpeg-exif-orientation-3", "jpeg-exif-orientation-6",
         "jpeg-exif-orientation-8", "jpeg-exif-orientation-2"]


@pytest.mark.parametrize("name", NAMES)
def test_every_mode_and_container_loads_with_the_right_colours(tmp_path: Path, name: str) -> None:
    path = make(name, tmp_path)
    rgb = load_image(path)
    assert rgb.dtype == np.float32 and rgb.shape == (16, 32, 3), rgb.shape
    assert rgb.min() >= 0.0 and rgb.max() <= 1.0
    got = _quadrants(rgb)
    want = _expected(name in GREY_CASES)
    if name == "bmp-1bit":  # one bit: each quadrant is black or white on the same side of 127
        assert np.array_equal(got > 127, want > 127), (got, want)
        return
    tol = 12.0 if name in LOSSY else 1.5
    assert np.abs(got - want).max() <= tol, (name, got.round(), want.round())


def test_transparency_is_laid_over_black_and_said(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    rgba = np.dstack([REF, np.full((16, 32), 255, np.uint8)])
    rgba[:, :16, 3] = 0  # the left half fully transparent
    path = tmp_path / "t.png"
    Image.fromarray(rgba, "RGBA").save(path)
    with caplog.at_level("INFO", logger="dreamstate.render"):
        rgb = load_image(path)
    assert rgb[:, :16].max() == 0.0 and np.allclose(rgb[4, 24] * 255, (0, 255, 0))
    assert any("transparent" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(("brand", "says"), [(b"heic", "HEIC"), (b"mif1", "HEIF"), (b"avif", "AVIF")])
def test_phone_formats_we_cannot_decode_are_refused_with_the_fix(tmp_path: Path, brand: bytes, says: str) -> None:
    path = tmp_path / "IMG_0001.HEIC"
    path.write_bytes(b"\x00\x00\x00\x18ftyp" + brand + b"\x00" * 64)
    with pytest.raises(RenderError, match=says) as err:
        load_image(path)
    assert "convert it to JPEG or PNG" in str(err.value)


@pytest.mark.parametrize("content", [b"", b"not an image", b"\xff\xd8\xff\xe0" + b"\x00" * 20, b"\x89PNG\r\n\x1a\n"])
def test_broken_files_are_refused_not_turned_into_something_else(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "x.jpg"
    path.write_bytes(content)
    with pytest.raises(RenderError, match="not a readable image"):
        load_image(path)


def test_a_folder_is_said_to_be_a_folder(tmp_path: Path) -> None:
    with pytest.raises(RenderError, match="is a folder"):
        load_image(tmp_path)


def test_a_truncated_jpeg_is_refused(tmp_path: Path) -> None:
    buf = io.BytesIO()
    Image.fromarray(REF, "RGB").save(buf, "JPEG")
    path = tmp_path / "cut.jpg"
    path.write_bytes(buf.getvalue()[:200])
    with pytest.raises(RenderError, match="not a readable image"):
        load_image(path)


@pytest.mark.parametrize(("command", "out"), [("dream", "x.txt"), ("draw", "y.svg"), ("explain", "z.npy")])
def test_an_output_picture_that_is_not_an_image_type_is_refused_before_the_work(
        command: str, out: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A new user's `dream china.jpg --out x.txt` dreamed for 10 s, then died in OpenCV's encoder."""
    from dreamstate.engine.tools.cli import main as cli_main

    argv = {"dream": ["dream", "in.png"], "draw": ["draw"], "explain": ["explain", "in.png"]}[command]
    with pytest.raises(SystemExit) as exc:
        cli_main([*argv, "--out", str(tmp_path / out)])
    assert exc.value.code == 2
    assert "does not end in an image type" in capsys.readouterr().err


def test_save_image_names_a_suffix_it_cannot_write(tmp_path: Path) -> None:
    from dreamstate.engine.core.errors import RenderError
    from dreamstate.engine.core.images import save_image

    with pytest.raises(RenderError, match=r"'\.txt' is not an image type .*fix: use a name ending in \.png"):
        save_image(tmp_path / "x.txt", np.zeros((4, 4, 3), np.float32))
    assert not (tmp_path / "x.txt").exists()
