"""Feature groups and the names of the values each one adds to a feature vector.

Pure Python (no numpy), so show checks can use it without loading the signal stack.
``engine.core.show.KNOWN_FEATURES`` lists the group names a show may ask for; ``GROUP_NAMES`` here
must cover exactly those groups (a test keeps the two in sync).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

BANDS: Final[tuple[tuple[str, float, float], ...]] = (
    ("delta", 1.0, 4.0),
    ("theta", 4.0, 8.0),
    ("alpha", 8.0, 13.0),
    ("beta", 13.0, 30.0),
    ("gamma", 30.0, 45.0),
)
"""Analysis bands (name, low Hz inclusive, high Hz exclusive; gamma includes 45 Hz)."""

N_MFCC: Final = 13
"""Cepstral coefficients per window, as in the ml4a audio t-SNE recipe."""

GROUP_NAMES: Final[dict[str, tuple[str, ...]]] = {
    "log_band_power": tuple(f"{b}_log" for b, _, _ in BANDS),
    "relative_power": tuple(f"{b}_rel" for b, _, _ in BANDS),
    "spectral_entropy": ("spectral_entropy",),
    "spectral_edge": ("spectral_edge",),
    "hjorth": ("hjorth_activity", "hjorth_mobility", "hjorth_complexity"),
    "esense": ("attention", "meditation"),
    "mfcc": tuple(f"mfcc_{i}" for i in range(N_MFCC)),
}

RULE_EXTRA_NAMES: Final = ("attention", "meditation", "signal")
"""Values a rule may use besides the feature vector: the latest eSense and POOR_SIGNAL."""


def feature_names(groups: Iterable[str]) -> tuple[str, ...]:
    """The names of the feature vector for ``groups``, in order (unknown groups raise KeyError)."""
    out: list[str] = []
    for g in groups:
        out.extend(GROUP_NAMES[g])
    return tuple(out)


def rule_names(groups: Iterable[str]) -> tuple[str, ...]:
    """Every name a state rule may compare when the show uses these feature ``groups``."""
    names = list(feature_names(groups))
    names += [n for n in RULE_EXTRA_NAMES if n not in names]
    return tuple(names)
