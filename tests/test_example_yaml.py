"""config/example.yaml documents every option of every config model, with its default and bounds.

The file's comments are read section by section (by indentation, as YAML nests keys), with
commented-out keys (`# key: value`) counted as written. For every field of every pydantic
model in `edge_facedet.config`, the test asks:

* is it written as its own key in the right section (`mqtt.tls.insecure`, not `insecure`
  found inside `allow_insecure`);
* does the comment that documents it (the key line's own comment and its continuation lines,
  else the comment block right above the key) give the model's default, as `(default X)`,
  `default X`, `Default: X` or `X (default)`, for every field with a fixed default;
* does it give the model's bounds, as `a..b`: `a..b` means a <= value <= b (pydantic `ge`,
  `le`), and `>a..b` means a < value <= b (`gt`); a bound the model lacks is an error too.

`Roi`'s keys are written in flow style (`{x_min: ..}`) and take their bounds from the `roi`
comment; `SecretSource`'s keys are documented in the file's header. Control tests change the
text (a default, a bound, a key) and show the check reports exactly that.
"""

from __future__ import annotations

import enum
import math
import re
import types
import typing
from dataclasses import dataclass
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError
from pydantic_core import PydanticUndefined

from edge_facedet.config import (
    CameraConfig,
    CameraSettings,
    FieldOfView,
    HttpAuthConfig,
    MainStreamConfig,
    MetricsConfig,
    ModelConfig,
    MotionConfig,
    MqttConfig,
    PublishConfig,
    QosConfig,
    Roi,
    SecretSource,
    ServiceConfig,
    ShardConfig,
    SnapshotConfig,
    SnapshotDirConfig,
    TlsConfig,
    TrackingConfig,
)
from tests.support.paths import REPO

EXAMPLE = REPO / "config" / "example.yaml"
HEADER: tuple[str, ...] = ("<header>",)
# Where each model is documented. CameraConfig's own keys are shown in `cameras`; the
# settings it shares with `defaults` (CameraSettings) are documented once, under `defaults`.
SECTIONS: dict[tuple[str, ...], tuple[type[BaseModel], frozenset[str] | None]] = {
    (): (ServiceConfig, None),
    ("model",): (ModelConfig, None),
    ("mqtt",): (MqttConfig, None),
    ("mqtt", "qos"): (QosConfig, None),
    ("mqtt", "tls"): (TlsConfig, None),
    ("metrics",): (MetricsConfig, None),
    ("metrics", "auth"): (HttpAuthConfig, None),
    ("defaults",): (CameraSettings, None),
    ("defaults", "publish"): (PublishConfig, None),
    ("defaults", "tracking"): (TrackingConfig, None),
    ("defaults", "snapshots"): (SnapshotConfig, None),
    ("defaults", "motion"): (MotionConfig, None),
    ("defaults", "main_stream"): (MainStreamConfig, None),
    ("defaults", "main_stream", "map"): (FieldOfView, None),
    ("snapshot_dir",): (SnapshotDirConfig, None),
    ("shard",): (ShardConfig, None),
    ("defaults", "roi"): (Roi, None),
    ("cameras",): (
        CameraConfig,
        frozenset(CameraConfig.model_fields) - frozenset(CameraSettings.model_fields),
    ),
    HEADER: (SecretSource, None),
}
# Rules between fields (model validators) that the comment must state as well.
CROSS_FIELD_RULES: dict[tuple[tuple[str, ...], str], str] = {
    (("mqtt",), "reconnect_max_s"): ">= reconnect_initial_s",
    (("defaults",), "reconnect_max_s"): ">= reconnect_initial_s",
    (("defaults", "tracking"), "max_update_interval_s"): ">= update_interval_s",
    (("defaults", "tracking"), "low_confidence"): "<= confidence_threshold",
    (("defaults", "snapshots"), "mode"): "needs tracking",
    (("defaults", "motion"), "recheck_interval_s"): "<= heartbeat_s",
    (("defaults", "motion"), "recalibrate_area"): "> min_area",
}

_KEY = re.compile(r"^(?P<indent>\s*)(?P<hash>#\s*)?(?P<dash>-\s+)?(?P<key>[A-Za-z_]\w*):(?=\s|$)")
_FLOW_KEY = re.compile(r"[{,]\s*(?P<key>[A-Za-z_]\w*):")
_NUMBER = r"-?\d+(?:\.\d+)?"
_RANGE = re.compile(rf"(?<![\w.])(?P<gt>>)?(?P<low>{_NUMBER})\.\.(?P<high>{_NUMBER})(?!\w|\.\d)")
_DEFAULT_AFTER = re.compile(r"\bdefault:?\s+(?P<value>[^\s,;()]+)", re.IGNORECASE)
_DEFAULT_BEFORE = re.compile(r"(?P<value>[^\s,;()]+)\s+\(default[);]", re.IGNORECASE)


@dataclass
class Entry:
    """A key as written in the file (commented out or not) and the comment documenting it."""

    path: tuple[str, ...]
    line: int
    doc: str = ""


def _all_field_names() -> frozenset[str]:
    return frozenset(name for model, _ in SECTIONS.values() for name in model.model_fields)


def _split_comment(text: str) -> tuple[str, str | None]:
    """A YAML line's content and its trailing comment (` #` outside quotes), if any."""
    quote = None
    for index, char in enumerate(text):
        if quote:
            if char == quote:
                quote = None
        elif char in "'\"":
            quote = char
        elif char == "#" and (index == 0 or text[index - 1] in " \t"):
            return text[:index], text[index + 1 :].strip()
    return text, None


class _Reader:
    """Reads the file line by line into entries; see `parse`."""

    def __init__(self) -> None:
        self.known = _all_field_names()
        self.entries: dict[tuple[str, ...], list[Entry]] = {}
        self.stack: list[tuple[int, tuple[str, ...]]] = []  # (indent, path) of open keys
        self.block: list[str] = []  # comment lines right above the next key
        self.last: Entry | None = None  # the key whose own comment may continue below
        self.comment_column: int | None = None  # where that comment's `#` is

    def add(self, path: tuple[str, ...], line: int, doc: str) -> Entry:
        entry = Entry(path=path, line=line, doc=doc)
        self.entries.setdefault(path, []).append(entry)
        return entry

    def header(self, lines: list[str]) -> int:
        """The header (up to the first blank line) documents the secret sources."""
        index = 0
        while index < len(lines) and lines[index].strip():
            match = _KEY.match(lines[index])
            if match and match["hash"]:  # `#   file: PATH   the file's content`
                self.add((*HEADER, match["key"]), index + 1, lines[index])
            index += 1
        return index

    def line(self, number: int, raw: str) -> None:
        match = _KEY.match(raw)
        if match is not None and (not match["hash"] or match["key"] in self.known):
            self.key(number, raw, match)
        elif raw.lstrip().startswith("#"):
            self.comment(number, raw)
        else:  # a blank line, or a line that is no key: comments above it document nothing
            self.block, self.last, self.comment_column = [], None, None

    def comment(self, number: int, raw: str) -> None:
        body = raw.strip().lstrip("#").strip()
        if self.last is not None and raw.index("#") == self.comment_column:
            self.last.doc += " " + body  # the key line's own comment, continued
        elif body.startswith("{") and self.last is not None:
            for flow in _FLOW_KEY.finditer(body):  # `# roi: ...` then `#   {x_min: ..}`
                self.add((*self.last.path, flow["key"]), number, self.last.doc)
        else:
            self.block.append(body)
            self.last, self.comment_column = None, None

    def key(self, number: int, raw: str, match: re.Match[str]) -> None:
        # A commented-out key sits where its `#` is; a list item's key after the `- `.
        indent = len(match["indent"])
        if not match["hash"]:
            indent += len(match["dash"] or "")
        while self.stack and self.stack[-1][0] >= indent:
            self.stack.pop()
        path = (*(self.stack[-1][1] if self.stack else ()), match["key"])
        rest = raw[match.end() :]
        value, inline = _split_comment(rest)
        doc = inline if inline is not None else " ".join(self.block)
        entry = self.add(path, number, doc)
        self.stack.append((indent, path))
        for flow in _FLOW_KEY.finditer(value):  # `roi: {x_min: 0.1, ...}`
            self.add((*path, flow["key"]), number, doc)
        self.block = []
        self.last = entry if inline is not None else None
        self.comment_column = len(raw) - len(rest) + len(value) if inline is not None else None


def parse(text: str) -> dict[tuple[str, ...], list[Entry]]:
    """Every key of the file by its path, commented-out keys included, with its comment."""
    reader = _Reader()
    lines = text.splitlines()
    start = reader.header(lines)
    for number, raw in enumerate(lines[start:], start=start + 1):
        reader.line(number, raw)
    return reader.entries


def bounds_of(model: type[BaseModel], name: str) -> tuple[str, float, float] | None:
    """("ge"|"gt", low, high) of a number, or of a list's length; None if it has none."""
    info = model.model_fields[name]
    is_list = typing.get_origin(info.annotation) is list
    low: tuple[str, float] | None = None
    high: float | None = None
    for meta in info.metadata:
        for kind in ("ge", "gt"):
            if getattr(meta, kind, None) is not None:
                low = (kind, float(getattr(meta, kind)))
        if getattr(meta, "le", None) is not None:
            high = float(meta.le)
        if is_list and getattr(meta, "min_length", None) is not None:
            low = ("ge", float(meta.min_length))
        if is_list and getattr(meta, "max_length", None) is not None:
            high = float(meta.max_length)
    if low is None and high is None:
        return None
    assert low is not None and high is not None, f"{model.__name__}.{name}: one-sided bounds"
    return low[0], low[1], high


def _written(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, enum.Enum):
        return str(value.value)
    return str(value)


def _same(written: str, default: Any) -> bool:
    written = written.rstrip(".:")
    if isinstance(default, (int, float)) and not isinstance(default, bool):
        try:
            return math.isclose(float(written), float(default))
        except ValueError:
            return False
    return written == _written(default)


def check_field(section: tuple[str, ...], model: type[BaseModel], name: str, doc: str) -> list[str]:
    """What the comment `doc` gets wrong about field `name` of `model`."""
    where = "secret" if section == HEADER else ".".join(section)
    label = f"{where}.{name}" if where else name
    problems = []
    info = model.model_fields[name]
    default = info.default
    if default is not PydanticUndefined and default is not None and info.default_factory is None:
        found = [m["value"] for m in _DEFAULT_AFTER.finditer(doc)]
        found += [m["value"] for m in _DEFAULT_BEFORE.finditer(doc)]
        if not found:
            problems.append(f"{label}: default {_written(default)!r} not documented ({doc!r})")
        elif not any(_same(value, default) for value in found):
            problems.append(
                f"{label}: comment says default {found[0]!r}, the model has {_written(default)!r}"
            )
    bounds = bounds_of(model, name)
    ranges = list(_RANGE.finditer(doc))
    if bounds is not None:
        kind, low, high = bounds
        expected = f"{'>' if kind == 'gt' else ''}{low:g}..{high:g}"
        if not ranges:
            problems.append(f"{label}: bounds {expected} not documented ({doc!r})")
        else:
            first = ranges[0]
            written = (bool(first["gt"]), float(first["low"]), float(first["high"]))
            if written != (kind == "gt", low, high):
                problems.append(f"{label}: comment says {first[0]}, the model has {expected}")
    elif ranges and not _models_in(info.annotation):
        # (A nested section's comment may give its keys' bounds, as `roi` does.)
        problems.append(f"{label}: comment gives bounds {ranges[0][0]} the model does not have")
    rule = CROSS_FIELD_RULES.get((section, name))
    if rule is not None and rule not in doc:
        problems.append(f"{label}: the rule {rule!r} is not documented")
    return problems


def check(text: str) -> list[str]:
    """Every problem of `text` as a documentation of the config models, one line each."""
    entries = parse(text)
    problems = []
    for section, (model, only) in SECTIONS.items():
        names = sorted(only if only is not None else model.model_fields)
        for name in names:
            written = entries.get((*section, name), [])
            if not written:
                where = ".".join(section) or "the top level"
                problems.append(f"{name}: not written as a key in {where}")
                continue
            doc = next((e.doc for e in written if e.doc), "")
            problems += check_field(section, model, name, doc)
    return problems


# -- the checks -------------------------------------------------------------------------------


def test_every_field_is_written_with_its_default_and_bounds() -> None:
    problems = check(EXAMPLE.read_text(encoding="utf-8"))
    assert problems == [], "\n".join(problems)


def _models_in(annotation: Any) -> set[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return {annotation}
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _models_in(typing.get_args(annotation)[0])
    found: set[type[BaseModel]] = set()
    if origin is not None or isinstance(annotation, types.UnionType):
        for arg in typing.get_args(annotation):
            found |= _models_in(arg)
    return found


def test_sections_cover_every_model_the_config_reaches() -> None:
    # A new nested model must get a section here, or its fields would go unchecked.
    reached: set[type[BaseModel]] = set()
    todo: list[type[BaseModel]] = [ServiceConfig]
    while todo:
        model = todo.pop()
        if model in reached:
            continue
        reached.add(model)
        for info in model.model_fields.values():
            todo.extend(_models_in(info.annotation))
    assert reached == {model for model, _ in SECTIONS.values()}


@pytest.mark.parametrize("model", [MqttConfig, CameraSettings])
def test_cross_field_rules_exist_in_the_models(model: type[BaseModel]) -> None:
    # CROSS_FIELD_RULES must describe real validators, not a rule since removed.
    with pytest.raises(ValidationError, match=">= reconnect_initial_s"):
        model.model_validate({"reconnect_initial_s": 5, "reconnect_max_s": 2})


# -- the check can fail --------------------------------------------------------------------------


def _mutated(old: str, new: str) -> list[str]:
    text = EXAMPLE.read_text(encoding="utf-8")
    assert text.count(old) == 1, f"{old!r} must occur once in example.yaml"
    return check(text.replace(old, new))


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        # A default changed in a comment.
        ("5..3600 (default 30)", "5..3600 (default 31)", "mqtt.keepalive_s: comment says default"),
        ("0.01..3600 (default 0.5)", "0.01..3600 (default 0.4)", "defaults.max_lag_s: comment"),
        ("# default false\n", "# default true\n", "mqtt.tls.enabled: comment says default"),
        ("(default on_change)", "(default on_faces)", "defaults.publish.policy: comment says"),
        ("FP16-INT8 (default;", "FP16 (default;", "model.precision: comment says default"),
        # A bound changed, or written as exclusive.
        ("1..100000 (default 1000)", "1..10000 (default 1000)", "mqtt.outbox_size: comment says"),
        ("0..1 (default 0.5)", ">0..1 (default 0.5)", "defaults.confidence_threshold: comment"),
        ("# 1..4096 cameras", "# 1..4095 cameras", "cameras: comment says 1..4095"),
        # A key only found inside a longer key (`insecure` in `allow_insecure`).
        (
            "# insecure: false",
            "# insecure_mode: false",
            "insecure: not written as a key in mqtt.tls",
        ),
        # A key written in the wrong section.
        ("  keepalive_s: 30\n", "", "keepalive_s: not written as a key in mqtt"),
    ],
)
def test_the_check_reports_a_changed_comment(old: str, new: str, expected: str) -> None:
    problems = _mutated(old, new)
    assert len(problems) == 1 and problems[0].startswith(expected), problems
