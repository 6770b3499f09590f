"""Show-check for the signal area, called by ``engine.runtime.showfile.load_show``.

It finds, with key paths: rules that do not parse, rules that name a value the configured
features do not produce, rule states and calibration labels missing from ``states.labels``,
and too few labels for the chosen mode. Pure Python (no numpy).
"""

from __future__ import annotations

from dreamstate.engine.core.show import LoadedShow
from dreamstate.engine.signal.names import rule_names
from dreamstate.engine.signal.rules import RuleSyntaxError, names_in, parse_rule


def check_signal(loaded: LoadedShow) -> list[tuple[str, str]]:
    """Return (key path, message) for every signal/map/states problem in ``loaded``."""
    show = loaded.show
    states = show.states
    problems: list[tuple[str, str]] = []
    allowed = rule_names(show.signal.features)
    labels = list(states.labels)
    if len(set(labels)) != len(labels):
        problems.append(("states.labels", f"labels repeat: {labels}; list each state once"))
    if "absent" in labels:
        problems.append(("states.labels", "'absent' is reserved for 'nobody wears the headset'; "
                         "remove it from states.labels (use [attract] for that scene)"))
    for i, rule in enumerate(states.rules):
        key = f"states.rules[{i}]"
        if rule.state not in labels:
            problems.append((f"{key}.state", f"state {rule.state!r} is not in states.labels "
                             f"{labels}; add it there or fix the name"))
        try:
            expr = parse_rule(rule.when)
        except RuleSyntaxError as exc:
            problems.append((f"{key}.when", str(exc)))
            continue
        unknown = sorted(names_in(expr) - set(allowed))
        if unknown:
            problems.append((f"{key}.when", f"unknown value(s) {unknown} in {rule.when!r}; with "
                             f"signal.features = {list(show.signal.features)} the known values "
                             f"are {list(allowed)} (add the feature group to signal.features)"))
    if states.mode == "calibrated":
        if len(labels) < 2:
            problems.append(("states.labels", "mode = 'calibrated' needs at least two labels"))
        for i, (label, _secs) in enumerate(states.calibration.schedule):
            if label not in labels and label != "":
                problems.append((f"states.calibration.schedule[{i}]",
                                 f"label {label!r} is not in states.labels {labels}"))
    return problems
