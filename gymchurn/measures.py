"""The measures against churn that the job may recommend, read from a TOML file.

The rules live in ``measures.toml`` beside this module, written for a
marketer to edit; ``GYMCHURN_MEASURES_FILE`` points the job at another file.
The file's comments say how the rules are applied.
"""

import operator
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from gymchurn.schema import FEATURES

DEFAULT_FILE = Path(__file__).with_name("measures.toml")

_OPERATORS = {
    "==": operator.eq,
    "!=": operator.ne,
    "<=": operator.le,
    ">=": operator.ge,
    "<": operator.lt,
    ">": operator.gt,
}
_NUMBER = r"[-+]?\d+(?:\.\d+)?"
_CONDITION = re.compile(
    rf"^\s*(==|!=|<=|>=|<|>)\s*(?:({_NUMBER})\s*\*\s*([a-z_]+)|({_NUMBER})|([a-z_]+))\s*$"
)
_TIERS = ("high", "medium", "low")


class MeasuresFileError(ValueError):
    """The measures file cannot be read or breaks its format."""


@dataclass(frozen=True)
class Condition:
    """``feature op factor * other`` or ``feature op number``."""

    feature: str
    op: str
    number: float
    other: str | None = None
    """With ``other``, the feature is compared with ``number`` times that feature."""

    def test(self, clients: pd.DataFrame) -> np.ndarray:
        right = self.number * clients[self.other] if self.other else self.number
        return _OPERATORS[self.op](clients[self.feature], right).to_numpy(dtype=bool)


@dataclass(frozen=True)
class Measure:
    title: str
    action: str
    drivers: tuple[str, ...]
    """Features of which one must be among the month's strongest drivers; empty: no test."""
    conditions: tuple[Condition, ...]
    min_share: float

    def targets(self, clients: pd.DataFrame) -> np.ndarray:
        """Return which clients meet every condition."""
        matches = np.ones(len(clients), dtype=bool)
        for condition in self.conditions:
            matches &= condition.test(clients)
        return matches


@dataclass(frozen=True)
class Measures:
    measures: tuple[Measure, ...]
    target_groups: int
    top_drivers: int
    tiers: tuple[str, ...]
    path: Path


def _feature(name, where: str) -> str:
    if name not in FEATURES:
        raise MeasuresFileError(
            f"{where}: unknown feature {name!r}; expected one of {', '.join(FEATURES)}"
        )
    return name


def _condition(feature: str, text, where: str) -> Condition:
    match = _CONDITION.match(text) if isinstance(text, str) else None
    if match is None:
        raise MeasuresFileError(
            f"{where}: condition {text!r} on {feature} is not of the form "
            '"== 1", "<= 3" or "< 0.75 * avg_class_frequency_total"'
        )
    op, factor, other, number, lone = match.groups()
    if lone is not None:
        return Condition(feature, op, 1.0, _feature(lone, where))
    if other is not None:
        return Condition(feature, op, float(factor), _feature(other, where))
    return Condition(feature, op, float(number))


def _measure(entry: dict, where: str) -> Measure:
    known = {"title", "action", "drivers", "clients", "min_share"}
    unknown = sorted(set(entry) - known)
    if unknown:
        raise MeasuresFileError(f"{where}: unknown key(s) {', '.join(unknown)}")
    for key in ("title", "action", "clients"):
        if key not in entry:
            raise MeasuresFileError(f"{where}: missing key {key!r}")
    if not isinstance(entry["clients"], dict) or not entry["clients"]:
        raise MeasuresFileError(
            f"{where}: clients must be a table of conditions, such as "
            '{ contract_period = "== 1" }'
        )
    drivers = entry.get("drivers", [])
    if not isinstance(drivers, list):
        raise MeasuresFileError(f'{where}: drivers must be a list of features, such as ["age"]')
    share = entry.get("min_share", 0.0)
    if not isinstance(share, (int, float)) or not 0 <= share <= 1:
        raise MeasuresFileError(f"{where}: min_share must be a number from 0 to 1")
    return Measure(
        title=str(entry["title"]),
        action=str(entry["action"]),
        drivers=tuple(_feature(name, where) for name in drivers),
        conditions=tuple(
            _condition(_feature(feature, where), text, where)
            for feature, text in entry["clients"].items()
        ),
        min_share=float(share),
    )


def load_measures(path: Path | None = None) -> Measures:
    """Read and check a measures file; None reads the one shipped with the package.

    Raises:
        MeasuresFileError: the file is missing, is not TOML, or breaks the
            format; the message names the file and the measure.
    """
    path = Path(path or DEFAULT_FILE)
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise MeasuresFileError(f"{path}: cannot read the measures file: {error}") from None
    except UnicodeDecodeError as error:
        raise MeasuresFileError(
            f"{path}: not UTF-8 text (byte {error.start} cannot be read); save the file as UTF-8"
        ) from None
    except tomllib.TOMLDecodeError as error:
        raise MeasuresFileError(f"{path}: not valid TOML: {error}") from None
    settings = document.get("settings", {})
    if not isinstance(settings, dict):
        raise MeasuresFileError(f"{path}: settings must be a table, [settings]")
    entries = document.get("measure", [])
    if not entries:
        raise MeasuresFileError(f"{path}: no [[measure]] entries")
    if not isinstance(entries, list) or not all(isinstance(entry, dict) for entry in entries):
        raise MeasuresFileError(f"{path}: each measure must be a table headed [[measure]]")
    tiers = settings.get("tiers", ["high", "medium"])
    if not isinstance(tiers, list) or not tiers or set(map(str, tiers)) - set(_TIERS):
        raise MeasuresFileError(f"{path}: tiers must be a list of {', '.join(_TIERS)}")
    tiers = tuple(tiers)
    numbers = {}
    for key, default in (("target_groups", 3), ("top_drivers", 6)):
        value = settings.get(key, default)
        if not isinstance(value, int) or value < 1:
            raise MeasuresFileError(f"{path}: {key} must be a whole number of at least 1")
        numbers[key] = value
    measures = tuple(
        _measure(entry, f"{path}, measure {i} ({entry.get('title', 'untitled')})")
        for i, entry in enumerate(entries, start=1)
    )
    # The at-risk list and the campaigns identify a measure only by its title.
    seen = {}
    for i, measure in enumerate(measures, start=1):
        first = seen.setdefault(measure.title.strip().casefold(), i)
        if first != i:
            raise MeasuresFileError(
                f"{path}, measure {i} ({measure.title}): measure {first} has the same title; "
                "give each measure a title of its own, because the at-risk list and the "
                "campaigns name a measure by its title"
            )
    return Measures(measures, numbers["target_groups"], numbers["top_drivers"], tiers, path)
