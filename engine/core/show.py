"""Show files: TOML, validated in full before anything starts.

``load_show(path)`` parses and validates the whole file and raises one ``ShowError`` listing
every problem with its key path, the bad value and a hint. Unknown keys are errors. Relative
paths resolve against the show file's folder and must stay inside it.

``DEMO_SHOW`` is the embedded default (simulated headset, bundled EfficientNet-Lite0 model).
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    StrictBool,
    ValidationError,
    field_validator,
    model_validator,
)

from dreamstate.engine.core.errors import PathEscapeError, ShowError
from dreamstate.engine.core.paths import resolve_inside

KNOWN_FEATURES: tuple[str, ...] = (
    "log_band_power",   # log power in delta, theta, alpha, beta, gamma
    "relative_power",   # the same bands as a share of the total
    "spectral_entropy",
    "spectral_edge",    # 90 % spectral edge frequency
    "hjorth",           # activity, mobility, complexity
    "esense",           # device attention and meditation
    "mfcc",             # cepstral coefficients of the window (the audio t-SNE recipe)
)


def _wants_number(annotation: Any) -> bool:
    """True when a field takes only numbers (int or float, maybe optional or constrained)."""
    import types
    import typing

    if typing.get_origin(annotation) is Annotated:
        return _wants_number(typing.get_args(annotation)[0])
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return bool(args) and all(_wants_number(a) for a in args)
    return annotation in (int, float)


class Section(BaseModel):
    # nan and inf are refused in every float of a show (TOML can spell both)
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, use_attribute_docstrings=True)

    @field_validator("*", mode="before")
    @classmethod
    def _numbers_are_not_text(cls, value: Any, info: Any) -> Any:
        """A show stays strictly typed: ``zoom = "1.01"`` is refused (pydantic would take it),
        as ``enabled = "true"`` is; a number inside a list (``size = ["1280", 720]``) too."""
        field = cls.model_fields.get(info.field_name or "")
        if field is None:
            return value
        import typing

        ann = field.annotation
        items = typing.get_args(ann) if typing.get_origin(ann) is tuple else ()
        if isinstance(value, str) and _wants_number(ann):
            raise ValueError(f"{value!r} is text; write the number without quotes")
        if isinstance(value, list) and items and any(isinstance(v, str) and _wants_number(t)
                                                     for v, t in zip(value, items, strict=False)):
            raise ValueError(f"{value!r} holds text; write the numbers without quotes")
        if isinstance(value, dict) and typing.get_origin(ann) is dict:
            kinds = typing.get_args(ann)
            bad = [k for k, v in value.items() if isinstance(v, str) and len(kinds) == 2 and _wants_number(kinds[1])]
            if bad:
                raise ValueError(f"{bad[0]} = {value[bad[0]]!r} is text; write the number without quotes")
        return value


class ShowMeta(Section):
    name: str = "untitled"
    """shown in logs and telemetry"""
    model: str = "efficientnet-lite0"
    """dream model: a registry name (`dreamstate models list`) or an .onnx file inside the show folder"""
    images: list[str] = Field(default_factory=list)
    """source photographs (inside the show folder); the dream starts from the first and reseeds cycle through them"""
    default_scene: str = "calm"
    """the scene for a state that has no scene of its own name"""


class SimStep(Section):
    state: Literal["relaxed", "focused", "neutral", "blinking", "off_head"]
    """simulated brain state for this step"""
    seconds: Annotated[float, Field(gt=0)]
    """how long the step lasts"""


class LslInConfig(Section):
    name: str | None = None
    """the LSL stream's name (e.g. `Muse`, `BlueMuse`, `obci_eeg1`); unset: any name"""
    type: str | None = None
    """the stream's type; unset: `EEG` when neither name nor source_id is set, else any type"""
    source_id: str | None = None
    """the stream's source_id (survives the sender's restarts); unset: any"""
    channels: list[str] = Field(default_factory=list)
    """channel names to use; several are averaged into the one pipeline channel (empty: the first EEG channel)"""
    unit: Literal["auto", "uV", "mV", "V"] = "auto"
    """the stream's unit: `auto` reads its metadata (none: microvolts, the XDF convention)"""
    timeout_s: Annotated[float, Field(gt=0, le=600)] = 10.0
    """how long to look for the stream at start; then the error lists the streams that are visible"""
    stall_s: Annotated[float, Field(gt=0, le=60)] = 2.0
    """seconds without a sample before the stream counts as gone and is looked for again"""


class DeviceConfig(Section):
    kind: Literal["thinkgear", "simulated", "replay", "lsl"] = "simulated"
    """`thinkgear` (a headset on a serial port), `simulated`, `replay` (a recording) or `lsl` (any LSL EEG stream)"""
    port: str = "auto"
    """serial port, or `auto` to find the headset or dongle"""
    baud: Literal[1200, 9600, 57600, 115200] | None = None
    """serial rate; leave unset to probe 57600, 115200 and 9600"""
    headset_id: Annotated[int, Field(ge=0, le=0xFFFF)] | None = None
    """dongle only: pair with this headset id (unset: any headset)"""
    file: str | None = None
    """replay only: a recording MNE reads (FIF, EDF, ...) inside the show folder"""
    speed: Annotated[float, Field(gt=0, le=1000)] = 1.0
    """simulated and replay: playback speed (1 = real time)"""
    loop: StrictBool = True
    """simulated and replay: start again at the end"""
    script: list[SimStep] = Field(default_factory=list)
    """simulated only: the states to play, in order (empty: the demo cycle)"""
    seed: int | None = None
    """simulated only: random seed (unset: different each run)"""
    lsl: LslInConfig = Field(default_factory=LslInConfig)
    """lsl only: which stream, which channels, its unit (`[device.lsl]`)"""

    @model_validator(mode="after")
    def _replay_needs_file(self) -> DeviceConfig:
        if self.kind == "replay" and not self.file:
            raise ValueError("kind = 'replay' needs file = 'recording.fif' (a path inside the show folder)")
        return self


class SignalConfig(Section):
    window_s: Annotated[float, Field(gt=0.1, le=4.0)] = 0.5
    """EEG window length in seconds."""
    hop_s: Annotated[float, Field(gt=0.01, le=4.0)] = 0.25
    """seconds between window starts (no more than window_s)"""
    notch_hz: Literal[50, 60] | None = 50
    """mains frequency to remove (50 in Europe, 60 in the Americas; unset: none)"""
    band_hz: tuple[float, float] = (1.0, 45.0)
    """band-pass edges in Hz (low, high)"""
    poor_signal_threshold: Annotated[int, Field(ge=0, le=200)] = 50
    """ThinkGear POOR_SIGNAL above which a window is rejected (0 = perfect, 200 = off the head)."""
    clip_uv: Annotated[float, Field(gt=0)] = 7000.0
    """a window with a sample beyond this many microvolts is rejected"""
    features: list[str] = Field(default_factory=lambda: ["log_band_power", "relative_power",
                                                         "spectral_entropy", "hjorth"])
    """feature groups computed per window (see Features below)"""

    @field_validator("features")
    @classmethod
    def _known_features(cls, value: list[str]) -> list[str]:
        unknown = [f for f in value if f not in KNOWN_FEATURES]
        if unknown:
            raise ValueError(f"unknown feature(s) {unknown}; known: {list(KNOWN_FEATURES)}")
        if not value:
            raise ValueError(f"at least one feature is needed; known: {list(KNOWN_FEATURES)}")
        return value

    @model_validator(mode="after")
    def _hop_le_window(self) -> SignalConfig:
        if self.hop_s > self.window_s:
            raise ValueError(f"hop_s ({self.hop_s}) must not exceed window_s ({self.window_s})")
        lo, hi = self.band_hz
        if not 0 < lo < hi < 256:
            raise ValueError(f"band_hz must be (low, high) with 0 < low < high < 256, got {self.band_hz}")
        return self


class MapConfig(Section):
    method: Literal["tsne", "pca"] = "tsne"
    """the 2D map: `tsne` (openTSNE) or `pca`"""
    placement: Literal["knn", "transform"] = "knn"
    """how a new window lands on the map: `knn` (fast, recommended) or `transform` (openTSNE)"""
    reference_size: Annotated[int, Field(ge=20, le=20000)] = 240
    """windows in the map's reference set; the first map (and `/dreamstate/map`) appears once this many windows
    were accepted: 240 at the 0.25 s hop is about a minute, more while poor signal rejects windows"""
    refit_every_s: Annotated[float, Field(ge=5)] = 60.0
    """seconds between background refits of the map"""
    perplexity: Annotated[float, Field(gt=1, le=200)] = 30.0
    """t-SNE perplexity"""
    seed: int = 0
    """random seed of the map fits"""


class Rule(Section):
    state: str
    """the state this rule votes for"""
    when: str = Field(description="feature comparison, e.g. 'attention > 60' or 'alpha_rel > 0.3'")


class CalibrationConfig(Section):
    schedule: list[tuple[str, float]] = Field(default_factory=list,
                                             description="[label, seconds] clips in order")
    min_windows_per_label: Annotated[int, Field(ge=5)] = 20
    """accepted windows each label needs before the classifier is fitted"""
    classifier: Literal["logistic", "lda", "knn"] = "logistic"
    """scikit-learn classifier: `logistic`, `lda` or `knn`"""
    save: str | None = None
    """JSON file (inside the show folder) the calibration is saved to and loaded from."""


class StatesConfig(Section):
    mode: Literal["rules", "clusters", "calibrated"] = "rules"
    """how a state is derived: `rules`, `clusters` on the map, or a `calibrated` classifier"""
    labels: list[str] = Field(default_factory=lambda: ["calm", "focused", "neutral"])
    """the state names (besides `absent`); scenes of the same names play for them"""
    dwell_s: Annotated[float, Field(ge=0)] = 3.0
    """seconds a new state must lead before it takes over (no flicker)"""
    hysteresis: Annotated[float, Field(ge=0, le=1)] = 0.15
    """how much a challenger must lead the current state by (0..1)"""
    smooth_s: Annotated[float, Field(ge=0, le=60, description="average per-window state votes over about "
                                     "this long (0 = no smoothing)")] = 1.0
    rules: list[Rule] = Field(default_factory=list)
    """rules mode: one rule per state (see Rules below)"""
    clusters: Annotated[int, Field(ge=2, le=12)] = 3
    """clusters mode: number of clusters on the map"""
    calibration: CalibrationConfig = Field(default_factory=CalibrationConfig)
    """calibrated mode: labelled clips and the classifier"""


class SceneConfig(Section):
    layers: dict[str, Annotated[float, Field(ge=-10, le=10)]] = Field(default_factory=dict)
    """layer name -> weight of the DeepDream objective (`dreamstate models layers MODEL` lists the names)"""
    channels: dict[str, list[int]] = Field(default_factory=dict)
    """layer name -> channel indices to dream on (instead of whole layers)"""
    zoom: Annotated[float, Field(ge=0.8, le=1.25)] = 1.01
    """zoom per motion tick (10 a second); 1.01 is a slow dive. Beyond 0.8..1.25 the loop has no
    picture left to show (zoom 0.5 froze the renderer; 2.0 wiped it to one colour in a second)"""
    rotate: Annotated[float, Field(ge=-45, le=45)] = 0.0
    """degrees per motion tick"""
    translate: tuple[Annotated[float, Field(ge=-64, le=64)], Annotated[float, Field(ge=-64, le=64)]] = (0.0, 0.0)
    """pixels per motion tick (x, y), each -64..64"""
    step: Annotated[float, Field(gt=0, le=20)] = 1.5
    """gradient step in display levels (0..255 of the shown picture)"""
    octaves: Annotated[int, Field(ge=1, le=10)] = 3
    """DeepDream octaves (scales)."""
    octave_scale: Annotated[float, Field(ge=1.05, le=3.0)] = 1.4
    """size ratio between octaves (greater than 1)"""
    steps: Annotated[int, Field(ge=1, le=50)] = 2
    """gradient steps per octave (live: steps before the octave cycle moves on)"""
    blend: Annotated[float, Field(ge=0, le=1)] = 0.5
    """offline `feedback`: how much of the previous frame carries over"""
    mask: str | None = None
    """greyscale image (inside the show folder): where the dream may act"""
    guide: str | None = None
    """image (inside the show folder) whose features the dream is drawn toward"""
    image: str | None = None
    """source image for this scene (inside the show folder; default: show.images)"""
    crossfade_s: Annotated[float, Field(ge=0, le=60)] = 2.0
    """seconds to crossfade into this scene"""
    # stabilisers that keep the zoom-feedback loop alive (engine/render/stabilise.py)
    color_nudge: Annotated[float, Field(ge=0, le=0.5, description="per step, pull the colour statistics this "
                                        "share of the way to the source palette (0 = off)")] = 0.02
    contrast: Annotated[float, Field(gt=0, le=2.0, description="luminance contrast the colour nudge aims "
                                     "for, as a share of the source's")] = 0.85
    warp_px: Annotated[float, Field(ge=0, le=256, description="resample the dream only after the motion "
                                    "moved some pixel this far (fewer resamples, less blur; 0 = every step)")] = 16.0
    # scene modes (engine/render/modes.py)
    mode: Literal["dream", "style", "drawing"] = "dream"
    """`dream` (DeepDream on the zoom-feedback loop), `style` (each frame is style(zoom(previous)), a
    feed-forward style network instead of the dream step) or `drawing` (two-colour ellipses searched, live,
    until the show's model scores them as a class of `draw`)"""
    style: str | None = None
    """style mode: the style model, a registry name (`toon` ships; `candy`, `mosaic` by `dreamstate models
    fetch`) or an .onnx file inside the show folder (with its .json sidecar)"""
    style_mix: Annotated[float, Field(ge=0, le=1)] = 1.0
    """style mode: share of the styled frame in each new frame (the rest is the unstyled, zoomed frame);
    crossfades in from 0 when the scene starts, so a style flows in"""
    draw: list[str | int] = Field(default_factory=list)
    """drawing mode: the class the drawing becomes, by name or index (`dreamstate draw --list-classes`), or
    several, taken in turn every `draw_each_s`; a new class starts from the current drawing"""
    draw_each_s: Annotated[float, Field(ge=5, le=86400)] = 90.0
    """drawing mode with several classes: seconds before the drawing moves on to the next one"""
    ellipses: Annotated[int, Field(ge=1, le=200)] = 40
    """drawing mode: how many ellipses the drawing has"""
    optimizer: Literal["random", "cma", "gradient"] = "random"
    """drawing mode: `random` (the original's random search, the default by measurement: docs/BENCHMARKS.md),
    `cma` (CMA-ES) or `gradient` (the classifier's gradient through a soft raster, then the random search)"""

    # the seeing overlay (engine/render/seeing.py)
    seeing: Literal["off", "gradient", "gxi", "lrp-eps", "lrp-ab"] = "off"
    """overlay on the frame this scene shows (dream, style or drawing) the attribution map of the class the
    show's model sees in it: `lrp-ab` (LRP z+, about the object), `lrp-eps`, `gxi` (gradient x input) or
    `gradient` (saliency); `off` shows none"""
    seeing_class: str | None = None
    """seeing: the class whose map is shown, by name or index; none = the model's top class for each map"""
    seeing_opacity: Annotated[float, Field(ge=0, le=1)] = 0.6
    """seeing: opacity of the map where its evidence is strongest (weak evidence stays transparent); crossfades
    in from 0 when the scene starts"""
    seeing_colormap: Literal["auto", "seismic", "jet", "inferno", "viridis", "hot"] = "auto"
    """seeing: colour map; `auto` is seismic (red for the class, blue against) for signed maps, inferno for
    `gradient`"""
    seeing_smooth: Annotated[float, Field(ge=0, le=64)] = 2.0
    """seeing: Gaussian blur of the map, sigma in dream-frame pixels (0 = off)"""
    seeing_every_s: Annotated[float, Field(ge=0, le=60)] = 0.5
    """seeing: recompute the map at most this often, in seconds (a map costs about one to four dream steps;
    0 = every frame)"""

    @field_validator("seeing_class", mode="before")
    @classmethod
    def _class_text(cls, value: Any) -> Any:
        """A class index may be written as a number; it travels as text (``"#442"`` works too)."""
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value

    @field_validator("draw", mode="before")
    @classmethod
    def _one_class(cls, value: Any) -> Any:
        """``draw = "killer whale"`` is one class; a list is several."""
        return [value] if isinstance(value, str | int) and not isinstance(value, bool) else value

    @model_validator(mode="after")
    def _mode_needs_its_subject(self) -> SceneConfig:
        if self.mode == "style" and not self.style:
            raise ValueError("mode = 'style' needs style = \"MODEL\" (`toon` ships with dreamstate; "
                             "`dreamstate models list` shows the others)")
        if self.mode == "drawing" and not self.draw:
            raise ValueError("mode = 'drawing' needs draw = \"class name\" (or a list of classes); "
                             "`dreamstate draw --list-classes --model MODEL` lists them")
        if any(isinstance(v, str) and not v.strip() for v in self.draw):
            raise ValueError("draw has an empty class name; write the class name or its index")
        return self


class AttractConfig(Section):
    scene: str = "attract"
    """the scene that plays while nobody wears the headset"""
    after_s: Annotated[float, Field(ge=0)] = 5.0
    """seconds of `absent` before the attract scene starts"""


class OutputConfig(Section):
    kind: Literal["auto", "window", "video", "png", "ndi", "none"] = "auto"
    """`window` (projector), `video` file, `png` snapshots, `ndi` (an NDI source only, no window; needs the `ndi`
    extra), `none`, or `auto` (a window, else video)"""
    display: Annotated[int, Field(ge=0)] = 0
    """which display the window opens on (0 = first)"""
    fullscreen: StrictBool = False
    """fill the display (the projector)"""
    size: tuple[Annotated[int, Field(ge=16, le=8192)], Annotated[int, Field(ge=16, le=8192)]] = (1280, 720)
    """output size in pixels (width, height)"""
    dream_size: tuple[Annotated[int, Field(ge=16, le=4096)], Annotated[int, Field(ge=16, le=4096)]] = (640, 360)
    """size the dream is computed at, upscaled to `size` (smaller is faster)"""
    fps: Annotated[float, Field(gt=0, le=240)] = 60.0
    """display frames per second"""
    vsync: StrictBool = True
    """wait for the display's refresh (no tearing)"""
    scale: Literal["gpu", "cpu"] = "gpu"
    """window: `gpu` hands the window dream-size frames and SDL's renderer scales them to the display (no
    projector-sized frame on the CPU; falls back to `cpu` with a warning where SDL has no renderer); `cpu`
    upscales with OpenCV"""
    path: str = "dreamstate.mp4"
    """video or snapshot path (inside the show folder)"""
    seconds: Annotated[float, Field(gt=0)] | None = None
    """end the show after this many seconds, e.g. to render a video file (`run --seconds` overrides)"""
    video_limit_mb: Annotated[float, Field(gt=0)] | None = 2000.0
    """video: stop writing when the file reaches this many MB (unset: no limit; about 20-30 MB a minute at 1280x720,
    more for busy pictures)"""
    mjpeg_port: Annotated[int, Field(ge=0, le=65535)] | None = None
    """serve an MJPEG preview on 127.0.0.1 at this port (unset: off)"""
    mjpeg_clients: Annotated[int, Field(ge=1, le=64, description="viewers of the MJPEG preview at once; "
                                        "more get 503 (each costs a thread and an encode per frame)")] = 4
    ndi: Annotated[str, Field(min_length=1, max_length=100)] | None = None
    """also send the displayed frames as an NDI source of this name, beside the window or file (unset: off; with
    `kind = "ndi"` the source name, default "dreamstate"); needs `pip install 'dreamstate[ndi]'` (docs/ndi.md)"""
    ndi_fps: Annotated[float, Field(gt=0, le=240)] | None = None
    """most frames a second sent over NDI (unset: every displayed frame); 30 halves the CPU the NDI compression
    takes, for a small machine at 1920x1080 (docs/ndi.md)"""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """where the dream runs: `auto` (CUDA when present), `cpu` or `cuda`"""
    display_rt_priority: Annotated[int, Field(ge=0, le=50)] = 5
    """real-time (SCHED_RR) priority the display thread asks for, so other work on the machine does not
    delay frames (0 = normal scheduling). Linux grants it to root, with CAP_SYS_NICE, or under an rtprio limit
    (the systemd unit sets LimitRTPRIO=10); refused, the display runs normally and the log says how to grant it"""
    cudnn_conv_algo_search: Literal["HEURISTIC", "EXHAUSTIVE", "DEFAULT"] = "HEURISTIC"
    """CUDA only: how cuDNN picks convolution algorithms. `HEURISTIC` (fast to start); `EXHAUSTIVE` times
    every algorithm once per input shape (slow start, then sometimes faster); `DEFAULT` maps to a slow path
    in onnxruntime 1.20 and later (onnxruntime#22705)"""
    precision: Literal["fp32", "fp16"] = "fp32"
    """number format of the dream step: `fp32` (32-bit floats, everywhere) or `fp16` (16-bit floats for the
    network's forward and backward passes, the objective and the final gradient kept in 32 bits, with loss
    scaling; meant for CUDA GPUs, where its speed is still to be measured). Needs `device = "auto"` or `"cuda"`:
    with `auto` and no CUDA, or `run --device cpu`, the dream runs fp32 with a warning (docs/gpu.md)"""

    @model_validator(mode="after")
    def _fp16_needs_cuda(self) -> OutputConfig:
        if self.precision == "fp16" and self.device == "cpu":
            raise ValueError("output.precision = \"fp16\" needs CUDA, and output.device = \"cpu\"; set "
                             "precision = \"fp32\", or device = \"auto\" or \"cuda\" on a machine with a CUDA GPU")
        return self

    @field_validator("ndi")
    @classmethod
    def _ndi_name(cls, value: str | None) -> str | None:
        if value is not None and (not value.strip() or any(ord(c) < 32 for c in value)):
            raise ValueError(f"{value!r} is not a usable NDI source name; write visible text, e.g. \"dreamstate\"")
        return value


class OscTarget(Section):
    host: str = "127.0.0.1"
    """where telemetry goes (TouchDesigner, Max)"""
    port: Annotated[int, Field(ge=1, le=65535)] = 7000
    """its UDP port"""


class OscConfig(Section):
    enabled: StrictBool = False
    """listen for OSC control and send telemetry"""
    listen_host: str = "127.0.0.1"
    """address to listen on; 127.0.0.1 accepts this machine only, 0.0.0.0 every network"""
    listen_port: Annotated[int, Field(ge=0, le=65535)] = 9000
    """UDP port for control (0: any free port)"""
    targets: list[OscTarget] = Field(default_factory=list)
    """telemetry receivers"""
    rate_hz: Annotated[float, Field(gt=0, le=120)] = 30.0
    """telemetry messages per second"""
    allow: list[str] | None = None
    """senders whose control is accepted, as addresses or networks (e.g. ["127.0.0.1", "10.0.0.0/24"]);
    datagrams from others are dropped and counted (unset: every sender that reaches listen_host)"""

    @field_validator("allow")
    @classmethod
    def _networks(cls, value: list[str] | None) -> list[str] | None:
        import ipaddress

        for item in value or []:
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise ValueError(f"{item!r} is not an IP address or network; write e.g. \"10.0.0.5\" or "
                                 "\"10.0.0.0/24\"") from None
        return value


class MqttConfig(Section):
    enabled: StrictBool = False
    """connect to an MQTT broker (several projectors, one headset)"""
    host: str = "127.0.0.1"
    """broker address"""
    port: Annotated[int, Field(ge=1, le=65535)] = 1883
    """broker port (1883; 8883 for TLS)"""
    installation: str = "gallery"
    """topic prefix shared by the nodes of one installation"""
    node: str = "node1"
    """this machine's name in the topics"""
    role: Literal["all", "eeg", "render"] = "all"
    """`all`: one machine does everything; `eeg`: reads the headset and publishes the state, shows no
    picture; `render`: has no headset, follows the state of the installation's `eeg` node and renders
    (several projectors, one headset)"""
    lead_s: Annotated[float, Field(ge=0, le=2)] = 0.15
    """eeg node: stamp each state this far in the future; render nodes apply it at that wall-clock
    moment, so every projector changes together (the machines keep time with NTP or chrony)"""
    telemetry_hz: Annotated[float, Field(gt=0, le=50)] = 4.0
    """telemetry messages per second"""
    username: Annotated[str | None, Field(description="broker login")] = None
    password: Annotated[SecretStr | None, Field(description="broker password (prefer password_env or "
                                                "password_file; never logged)")] = None
    password_env: Annotated[str | None, Field(description="read the password from this environment "
                                              "variable")] = None
    password_file: Annotated[str | None, Field(description="read the password from this file (inside "
                                               "the show folder)")] = None
    tls: Annotated[StrictBool, Field(description="connect with TLS (the broker's TLS port, often 8883)")] = False
    ca_file: Annotated[str | None, Field(description="CA certificate that signed the broker's "
                                         "certificate (inside the show folder)")] = None
    certfile: Annotated[str | None, Field(description="client certificate, when the broker asks for one")] = None
    keyfile: Annotated[str | None, Field(description="the client certificate's key")] = None

    @model_validator(mode="after")
    def _one_password_source(self) -> MqttConfig:
        given = [k for k in ("password", "password_env", "password_file") if getattr(self, k) is not None]
        if len(given) > 1:
            raise ValueError(f"give the password one way, not {given}; password_env or password_file keep it "
                             "out of the show file")
        if (self.ca_file or self.certfile or self.keyfile) and not self.tls:
            raise ValueError("ca_file/certfile/keyfile are set but tls = false; set tls = true")
        if self.role != "all" and not self.enabled:
            raise ValueError(f"role = {self.role!r} works through the broker; set enabled = true (and host/port)")
        return self


HealthLimit = tuple[float, float]


class HealthConfig(Section):
    """Is the picture alive? Measures, bounds and the reseed watchdog (engine/render/health.py).

    Bounds come from each source image's own measures with tolerances; a limit given here
    replaces the derived one for that measure (in 0..1 units, see docs/SHOWS.md).
    """

    enabled: Annotated[StrictBool, Field(description="measure the picture and reseed it when it dies")] = True
    watchdog_s: Annotated[float, Field(ge=1, le=3600, description="seconds out of bounds before a reseed")] = 20.0
    luminance: HealthLimit | None = None
    """[low, high] mean luminance 0..1 (unset: derived from the source image)"""
    contrast: HealthLimit | None = None
    """[low, high] std of luminance"""
    red: HealthLimit | None = None
    """[low, high] mean of the red channel 0..1"""
    green: HealthLimit | None = None
    """[low, high] mean of the green channel 0..1"""
    blue: HealthLimit | None = None
    """[low, high] mean of the blue channel 0..1"""
    colourfulness: HealthLimit | None = None
    """[low, high] Hasler–Süsstrunk colourfulness"""
    detail: HealthLimit | None = None
    """[low, high] mean gradient magnitude"""
    clipped: HealthLimit | None = None
    """[low, high] share of pixels at 0 or 255"""
    hue_entropy: HealthLimit | None = None
    """[low, high] normalised entropy of the hue histogram"""
    motion: HealthLimit | None = None
    """[low, high] mean change over one second"""

    @model_validator(mode="after")
    def _ordered(self) -> HealthConfig:
        for name, value in self.limits().items():
            if not value[0] <= value[1]:
                raise ValueError(f"{name} = [{value[0]}, {value[1]}]: the low limit must not exceed the high one")
        return self

    def limits(self) -> dict[str, HealthLimit]:
        skip = {"enabled", "watchdog_s"}
        return {k: v for k, v in self.__dict__.items() if k not in skip and v is not None}


DAYS: tuple[str, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def parse_ranges(text: str) -> list[tuple[int, int]]:
    """``"10:00-13:00, 14:00-18:00"`` -> minute ranges [(600, 780), (840, 1080)]; ``""`` -> []
    (closed). A range that ends before it starts runs past midnight (``"20:00-02:00"``).
    Raises ValueError with the fix."""
    out: list[tuple[int, int]] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        try:
            a, b = (x.strip() for x in part.split("-"))
            (ah, am), (bh, bm) = (map(int, a.split(":")), map(int, b.split(":")))
        except ValueError:
            raise ValueError(f"{part!r} is not a time range; write e.g. \"10:00-18:00\"") from None
        if not (0 <= ah <= 24 and 0 <= bh <= 24 and 0 <= am < 60 and 0 <= bm < 60):
            raise ValueError(f"{part!r} has a time outside 00:00..24:00")
        out.append((ah * 60 + am, bh * 60 + bm))
    return out


class HoursConfig(Section):
    enabled: StrictBool = False
    """fade to black and rest the dream outside opening hours"""
    timezone: str = "UTC"
    """IANA time zone of the gallery, e.g. "Europe/Berlin" (daylight saving is followed)"""
    weekly: dict[str, str] = Field(default_factory=lambda: dict.fromkeys(DAYS[:6], "10:00-18:00") | {"sun": ""})
    """opening times per weekday (mon..sun): "10:00-18:00", several as "10:00-13:00, 14:00-18:00",
    "" for closed"""
    closed_on: list[str] = Field(default_factory=list)
    """dates closed all day, "YYYY-MM-DD" (holidays)"""
    open_on: dict[str, str] = Field(default_factory=dict)
    """dates with other hours than their weekday: "YYYY-MM-DD" = "10:00-14:00" """
    fade_s: Annotated[float, Field(ge=0, le=600)] = 10.0
    """seconds to fade out at closing and back in at opening"""

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}; write an IANA name such as \"Europe/Berlin\"") from None
        return value

    @field_validator("weekly")
    @classmethod
    def _weekly(cls, value: dict[str, str]) -> dict[str, str]:
        unknown = sorted(set(value) - set(DAYS))
        if unknown:
            raise ValueError(f"unknown day(s) {unknown}; use {list(DAYS)}")
        for text in value.values():
            parse_ranges(text)
        return value

    @field_validator("closed_on", "open_on")
    @classmethod
    def _dates(cls, value: Any) -> Any:
        import datetime as dt

        for day in value:
            try:
                dt.date.fromisoformat(day)
            except ValueError:
                raise ValueError(f"{day!r} is not a date; write \"YYYY-MM-DD\"") from None
        if isinstance(value, dict):
            for text in value.values():
                parse_ranges(text)
        return value


class StatusConfig(Section):
    file: str | None = None
    """JSON status file (inside the show folder), rewritten atomically every `every_s` seconds for a
    kiosk monitor or a remote check: device, state, fps, picture health, counters, last errors, uptime
    (unset: none)"""
    every_s: Annotated[float, Field(ge=0.5, le=3600)] = 5.0
    """seconds between rewrites of the status file"""


class RecordConfig(Section):
    enabled: StrictBool = False
    """record the EEG (crash-safe journal, FIF when the show ends)"""
    path: str = "recordings/session.fif"
    """recording path (inside the show folder); a timestamp is added"""


class LslConfig(Section):
    enabled: StrictBool = False
    """publish the EEG, bands, state and markers as Lab Streaming Layer streams (docs/lsl.md)"""
    prefix: str = Field(default="dreamstate", min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    """stream names are `<prefix>-eeg`, `<prefix>-bands`, `<prefix>-state` and `<prefix>-markers`"""
    source_id: str | None = Field(default=None, min_length=1, max_length=200)
    """stable id consumers reconnect by; each stream appends its suffix (unset: `dreamstate:<host>:<show name>`)"""


class Show(Section):
    show: ShowMeta = Field(default_factory=ShowMeta)
    device: DeviceConfig = Field(default_factory=DeviceConfig)
    signal: SignalConfig = Field(default_factory=SignalConfig)
    map: MapConfig = Field(default_factory=MapConfig)
    states: StatesConfig = Field(default_factory=StatesConfig)
    scenes: dict[str, SceneConfig] = Field(default_factory=dict)
    attract: AttractConfig = Field(default_factory=AttractConfig)
    output: OutputConfig = Field(default_factory=OutputConfig)
    osc: OscConfig = Field(default_factory=OscConfig)
    mqtt: MqttConfig = Field(default_factory=MqttConfig)
    record: RecordConfig = Field(default_factory=RecordConfig)
    status: StatusConfig = Field(default_factory=StatusConfig)
    hours: HoursConfig = Field(default_factory=HoursConfig)

    @model_validator(mode="after")
    def _render_nodes_record_nothing(self) -> Show:
        if self.mqtt.enabled and self.mqtt.role == "render" and self.record.enabled:
            raise ValueError("record.enabled: a node with mqtt.role = 'render' has no headset to record; "
                             "record on the eeg node")
        return self
    health: HealthConfig = Field(default_factory=HealthConfig)
    lsl: LslConfig = Field(default_factory=LslConfig)


class LoadedShow:
    """A validated show plus the folder its relative paths resolve against."""

    def __init__(self, show: Show, folder: Path, source: str, *, operator_model: Path | None = None) -> None:
        self.show = show
        self.folder = folder
        self.source = source
        self.operator_model = operator_model
        """A model file named on the command line by the operator (``bench longrun --model``):
        trusted, so it may live outside the show folder; a show file's own ``show.model`` may not."""
        self.warnings: list[tuple[str, str]] = []  # (key path, message): valid, but probably not meant

    def with_show(self, show: Show) -> LoadedShow:
        """The same folder, source, warnings and operator model with another (edited) show."""
        out = LoadedShow(show, self.folder, self.source, operator_model=self.operator_model)
        out.warnings = list(self.warnings)
        return out

    def path(self, value: str, *, what: str = "path") -> Path:
        """Resolve a show-relative path, refusing anything outside the show folder."""
        return resolve_inside(self.folder, value, what=what)


HINTS: dict[str, str] = {
    "extra_forbidden": "remove the key or check its spelling against docs/SHOWS.md",
    "literal_error": "use one of the allowed values",
    "greater_than": "use a larger value",
    "greater_than_equal": "use a larger value",
    "less_than": "use a smaller value",
    "less_than_equal": "use a smaller value",
    "missing": "add this key",
    "bool_type": "write true or false (no quotes, lower case)",
}

ShowCheck = Callable[[LoadedShow], list[tuple[str, str]]]
"""A deeper check of a valid show (images readable, layers exist, ...): (key path, message) pairs.
The stages define them (``engine.signal.check``, ``engine.render.checks``); the show loader of
the runtime (``engine.runtime.showfile.load_show``) passes them in."""


def _key_path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _format_errors(err: ValidationError) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    for e in err.errors():
        loc = tuple(p for p in e["loc"] if p not in ("function-after",))
        msg = e["msg"].removeprefix("Value error, ")
        hint = HINTS.get(e["type"], "")
        value = e.get("input")
        secret = any(isinstance(p, str) and "password" in p for p in loc)
        shown = "" if e["type"] == "missing" or isinstance(value, dict) or secret else f" (got {value!r})"
        problems.append((_key_path(loc), f"{msg}{shown}" + (f"; {hint}" if hint else "")))
    return problems


def _path_problems(loaded: LoadedShow) -> list[tuple[str, str]]:
    show = loaded.show
    items: list[tuple[str, str | None]] = [("device.file", show.device.file),
                                           ("states.calibration.save", show.states.calibration.save),
                                           ("record.path", show.record.path),
                                           ("output.path", show.output.path),
                                           ("status.file", show.status.file)]
    items += [(f"show.images[{i}]", p) for i, p in enumerate(show.show.images)]
    items += [(f"mqtt.{k}", getattr(show.mqtt, k)) for k in ("password_file", "ca_file", "certfile", "keyfile")]
    for name, scene in show.scenes.items():
        items += [(f"scenes.{name}.mask", scene.mask), (f"scenes.{name}.guide", scene.guide),
                  (f"scenes.{name}.image", scene.image)]
    problems: list[tuple[str, str]] = []
    must_exist = {"device.file"} | {k for k, _ in items if k.startswith(("show.images", "scenes.", "mqtt."))}
    for key, raw in items:
        if raw is None or (key.startswith("scenes.") and raw in BUILTIN_MASKS):
            continue
        # image masks may say how to read the image: "edges:img.png", "luminance:img.png"
        value = raw.removeprefix("edges:").removeprefix("luminance:") if key.endswith(".mask") else raw
        try:
            p = loaded.path(value, what=key)
        except PathEscapeError as exc:
            problems.append((key, str(exc)))
            continue
        if key in must_exist and not p.exists():
            problems.append((key, f"file {value!r} not found at {p}; put it in the show folder or fix the name"))
        elif p.is_dir():
            problems.append((key, f"{value!r} is a folder, not a file; name a file inside it"))
    return problems


BUILTIN_MASKS = ("circle", "radial")


def _scene_problems(loaded: LoadedShow) -> list[tuple[str, str]]:
    show = loaded.show
    problems: list[tuple[str, str]] = []
    if not show.scenes:
        problems.append(("scenes", "the show defines no scenes; add at least one [scenes.<state>] table with "
                                   "layers = { ... } (see shows/demo.toml)"))
    if show.scenes and show.show.default_scene not in show.scenes:
        problems.append(("show.default_scene", f"scene {show.show.default_scene!r} is not defined; "
                         f"defined scenes: {sorted(show.scenes)}"))
    if show.scenes and show.attract.scene not in show.scenes:
        problems.append(("attract.scene", f"scene {show.attract.scene!r} is not defined; "
                         f"defined scenes: {sorted(show.scenes)}"))
    return problems


def _without(data: Any, loc: tuple[int | str, ...]) -> Any:
    """``data`` with the value at ``loc`` removed (a list item removes its whole list)"""
    import copy

    out = copy.deepcopy(data)
    parent: Any = out
    path = [p for p in loc if p not in ("function-after",)]
    for i, part in enumerate(path):
        last = i == len(path) - 1
        if isinstance(parent, dict) and part in parent:
            if last or isinstance(parent[part], list):
                del parent[part]
                return out
            parent = parent[part]
        else:
            return out
    return out


def _partial_show(data: dict[str, Any]) -> Show | None:
    """A Show built from what is valid in ``data`` (bad values fall back to their defaults),
    so paths and images can be checked in the same run as the type errors."""
    current: Any = data
    for _ in range(50):
        try:
            return Show.model_validate(current)
        except ValidationError as err:
            pruned = current
            for e in err.errors():
                pruned = _without(pruned, tuple(e["loc"]))
            if pruned == current:
                return None
            current = pruned
    return None


def validate_show_data(data: dict[str, Any], folder: Path, source: str, *,
                       checks: Sequence[ShowCheck] = ()) -> LoadedShow:
    """Validate a parsed TOML document; raise ``ShowError`` listing every problem in one go:
    type and range errors, then (on what is valid) paths and scenes, then each of ``checks``
    (images, layers and models, ...)."""
    problems: list[tuple[str, str]] = []
    try:
        show = Show.model_validate(data)
    except ValidationError as err:
        problems += _format_errors(err)
        partial = _partial_show(data)
        if partial is None:
            raise ShowError(source, problems) from None
        show = partial
    loaded = LoadedShow(show, folder, source)
    problems += _path_problems(loaded) + _scene_problems(loaded)
    bad = {k for k, _ in problems}
    for check in checks:
        # a check never repeats a problem already named for the same key
        problems += [(k, m) for k, m in check(loaded) if k not in bad]
    if problems:
        raise ShowError(source, problems)
    return loaded


MAX_SHOW_BYTES = 1 << 20  # a show file is a page of settings, not a data file
MAX_NESTING = 32


def _nesting(text: str) -> int:
    """Deepest [ / { nesting outside strings and comments (linear scan, no recursion)."""
    depth = best = 0
    quote: str | None = None
    escaped = comment = False
    for ch in text:
        if comment:
            comment = ch != "\n"
        elif quote:
            if escaped:
                escaped = False
            elif ch == "\\" and quote == '"':
                escaped = True
            elif ch == quote:
                quote = None
        elif ch in "\"'":
            quote = ch
        elif ch == "#":
            comment = True
        elif ch in "[{":
            depth += 1
            best = max(best, depth)
        elif ch in "]}":
            depth = max(0, depth - 1)
    return best


def read_show_text(path: Path) -> str:
    """The show file's text, or one ``ShowError`` saying what is wrong with the file itself:
    unreadable, a folder, too large, not UTF-8 text (binary), empty, or nested too deeply."""
    where = str(path)
    if path.is_dir():
        raise ShowError(where, [("(file)", "is a folder, not a show file; give the .toml file inside it")])
    try:
        size = path.stat().st_size
        if size > MAX_SHOW_BYTES:
            raise ShowError(where, [("(file)", f"is {size} bytes; a show file is a small TOML file "
                                               f"(at most {MAX_SHOW_BYTES} bytes): check the path")])
        raw = path.read_bytes()
    except OSError as exc:
        raise ShowError(where, [("(file)", f"cannot read show file: {exc.strerror}; check the path")]) from None
    if b"\x00" in raw:
        raise ShowError(where, [("(file)", "is a binary file, not a TOML show file; check the path")])
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ShowError(where, [("(file)", f"is not UTF-8 text (byte {exc.start}: {raw[exc.start:exc.start + 1]!r}); "
                                           "save it as UTF-8 (any text editor can)")]) from None
    if not any(line.strip() and not line.strip().startswith("#") for line in text.splitlines()):
        raise ShowError(where, [("(file)", "is empty (nothing but blanks and comments); start from shows/demo.toml")])
    if _nesting(text) > MAX_NESTING:
        raise ShowError(where, [("(toml)", f"arrays or tables nested deeper than {MAX_NESTING}; "
                                           "a show needs a few levels at most")])
    return text


def read_show(path: str | Path | None, *, checks: Sequence[ShowCheck] = ()) -> LoadedShow:
    """Read and validate a show file, or the embedded demo show when ``path`` is None: the
    schema, paths and scene references, then ``checks``. Raises ``ShowError`` listing every
    problem. ``engine.runtime.showfile.load_show`` adds the stages' checks; ``check`` and
    ``run`` both come through it, so they accept and refuse the same files."""
    if path is None:
        # The embedded demo reads no files; its outputs (the fallback video) go to the current folder.
        return validate_show_data(tomllib.loads(DEMO_SHOW), Path.cwd(), "<demo show>", checks=checks)
    p = Path(path)
    text = read_show_text(p)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ShowError(str(p), [("(toml)", f"not valid TOML: {exc}")]) from None
    except RecursionError:
        raise ShowError(str(p), [("(toml)", "nested too deeply to read")]) from None
    return validate_show_data(data, p.resolve().parent, str(p), checks=checks)


DEMO_SHOW = """
[show]
name = "demo"
model = "efficientnet-lite0"
default_scene = "calm"

[device]
kind = "simulated"
script = [
  { state = "relaxed", seconds = 20 },
  { state = "focused", seconds = 20 },
  { state = "neutral", seconds = 25 },
  { state = "off_head", seconds = 8 },
]

[states]
mode = "rules"
labels = ["calm", "focused", "neutral"]
dwell_s = 1.0          # the smoothed state must lead this long before it takes over
smooth_s = 1.5         # per-window votes are noisy: average them over about this long
rules = [
  { state = "calm", when = "alpha_rel > 0.50" },
  { state = "focused", when = "beta_rel > 0.30" },
]

[scenes.calm]              # slow, soft: eyes and ornament (a style scene is one line away:
layers = { block7 = 1.0 }  # mode = "style" with style = "candy" after `dreamstate models fetch candy`)
zoom = 1.003
rotate = 0.15
step = 1.2
blend = 0.6
contrast = 0.75

[scenes.focused]           # faster and sharp: faces and fur (a faster zoom outruns the dream on
layers = { block10 = 1.0 }  # two CPU cores and the picture goes soft)
zoom = 1.006
rotate = -0.3
step = 1.8
contrast = 0.95

[scenes.neutral]           # a drawing the network believes: two-colour ellipses searched until
mode = "drawing"           # EfficientNet-Lite0 sees a killer whale, then a jack-o'-lantern
draw = ["killer whale", "jack-o'-lantern"]
draw_each_s = 60

[scenes.attract]           # nobody wears the headset: a slow porthole into the dream
layers = { block9 = 1.0 }
zoom = 1.002
rotate = 0.1
step = 1.2
mask = "circle"
crossfade_s = 3

[output]
kind = "auto"
"""
