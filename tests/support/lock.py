"""The lock files (requirements.lock, requirements-test.lock) and pyproject.toml, read for checks.

The locks are `uv pip compile --generate-hashes` output: one requirement per logical line
(`name==version ; marker`), continued with backslashes by its `--hash=sha256:...` options, and
`# via` comments in between. `deploy/refresh-lock.sh` writes them.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.support.paths import REPO

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - 3.10 only
    import tomli as tomllib

if TYPE_CHECKING:
    from pathlib import Path

RUNTIME_LOCK = REPO / "deploy" / "requirements.lock"
TEST_LOCK = REPO / "deploy" / "requirements-test.lock"
REFRESH = REPO / "deploy" / "refresh-lock.sh"

_HASH = re.compile(r"--hash=(\w+):([0-9a-f]+)")


@dataclass(frozen=True)
class Pin:
    """One locked requirement: `name==version` for the environments its marker selects."""

    requirement: Requirement
    hashes: tuple[str, ...]

    @property
    def name(self) -> str:
        return canonicalize_name(self.requirement.name)

    @property
    def version(self) -> str:
        (spec,) = self.requirement.specifier
        assert spec.operator == "==", self.requirement
        return spec.version

    @property
    def marker(self) -> str:
        return str(self.requirement.marker or "")

    def applies(self, environment: dict[str, str]) -> bool:
        return self.requirement.marker is None or self.requirement.marker.evaluate(environment)


def read_lock(path: Path) -> list[Pin]:
    """Every requirement of a lock file, with the hashes written for it."""
    logical = re.sub(r"\\\n", " ", path.read_text())
    pins = []
    for line in logical.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        spec, _, _ = stripped.partition(" --")
        hashes = tuple(f"{kind}:{digest}" for kind, digest in _HASH.findall(stripped))
        pins.append(Pin(requirement=Requirement(spec), hashes=hashes))
    return pins


def pyproject() -> dict[str, Any]:
    with (REPO / "pyproject.toml").open("rb") as file:
        data: dict[str, Any] = tomllib.load(file)
    return data


def declared(*, extra: str | None = None) -> list[Requirement]:
    """The project's dependencies, or those of one optional extra."""
    project = pyproject()["project"]
    lines = project["dependencies"] if extra is None else project["optional-dependencies"][extra]
    return [Requirement(line) for line in lines]
