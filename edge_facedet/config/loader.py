"""Loading the config file: safe, strict YAML parsing, validation and the secrets check.

The YAML loader constructs plain types only and refuses duplicate keys, anchors and aliases
and deep nesting; the file's size is bounded. `load_config` is the one entry point.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import yaml
from pydantic import ValidationError

from edge_facedet.config.errors import ConfigError, short
from edge_facedet.config.files import TextFileError, check_regular_file, read_text_file
from edge_facedet.config.messages import format_validation_error
from edge_facedet.config.service import ServiceConfig

if TYPE_CHECKING:
    from collections.abc import Mapping

    from edge_facedet.config.secrets import SecretSource

MAX_CONFIG_BYTES: Final = 1024 * 1024
# Real configs nest 4-5 levels; the limit stops `[[[[...` from exhausting the stack.
MAX_YAML_DEPTH: Final = 32


class _SafeStrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys, anchors/aliases and deep nesting.

    Aliases are refused outright rather than counted: a handful of aliases nested a few
    levels deep already expands to billions of nodes for whoever walks the result (pydantic
    would), and a config has no need for them: `defaults` is the way to share settings.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()  # type: ignore[no-untyped-call]
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise _YamlError(
                "YAML anchors and aliases (&name, *name, <<:) are not supported; "
                "use the `defaults` section for settings shared by cameras",
                event.start_mark,
            )
        self._depth += 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                raise _YamlError(f"nested more than {MAX_YAML_DEPTH} levels deep", event.start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:  # noqa: FBT001, FBT002 - PyYAML's signature
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                first_line = seen.get(key)
            except TypeError:
                raise _YamlError("a mapping key is not hashable", key_node.start_mark) from None
            if first_line is not None:
                raise _YamlError(
                    f"duplicate key {short(key)} (first at line {first_line})",
                    key_node.start_mark,
                )
            seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


class _YamlError(Exception):
    def __init__(self, message: str, mark: yaml.Mark | None) -> None:
        super().__init__(message)
        self.message = message
        self.mark = mark


def _where(mark: yaml.Mark | None) -> str:
    # Only line and column: a Mark's str() quotes the source line, which may hold a secret.
    return f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""


def _parse_yaml(path: Path) -> Any:
    try:
        text = read_text_file(path, limit=MAX_CONFIG_BYTES)
    except TextFileError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    if not text.strip():
        raise ConfigError(f"{path}: the file is empty")
    try:
        # The loader class is a SafeLoader subclass: only plain YAML types are constructed.
        return yaml.load(text, Loader=_SafeStrictLoader)  # noqa: S506
    except _YamlError as exc:
        raise ConfigError(f"{path}: {_where(exc.mark)}{exc.message}") from None
    except yaml.MarkedYAMLError as exc:
        problem = exc.problem or exc.context or "invalid YAML"
        raise ConfigError(f"{path}: {_where(exc.problem_mark)}invalid YAML: {problem}") from None
    except yaml.reader.ReaderError as exc:
        raise ConfigError(
            f"{path}: invalid YAML: character #x{exc.character:04x} at offset {exc.position} "
            "is not allowed"
        ) from None
    except (yaml.YAMLError, RecursionError) as exc:
        raise ConfigError(f"{path}: invalid YAML ({type(exc).__name__})") from None


def load_config(path: Path, *, environ: Mapping[str, str] | None = None) -> ServiceConfig:
    """Read, parse and validate the config file; check that every secret can be read.

    Raises `ConfigError` (one line per problem, naming the file and the field) for anything
    wrong: unreadable file, bad encoding, bad YAML, invalid settings, unreadable secrets.
    """
    env = os.environ if environ is None else environ
    data = _parse_yaml(path)
    if not isinstance(data, dict):
        kind = "empty" if data is None else f"a {type(data).__name__}"
        raise ConfigError(f"{path}: the top level must be a mapping of settings, not {kind}")
    base_dir = Path(os.path.abspath(path)).parent  # noqa: PTH100 - no symlink resolution wanted
    try:
        config = ServiceConfig.model_validate(data, context={"base_dir": base_dir})
    except ValidationError as exc:
        raise format_validation_error(path, exc, data) from None
    problems = [
        f"{path}: {where}: {problem}"
        for where, secret in secret_sources(config)
        if (problem := _reveal_problem(secret, env)) is not None
    ]
    # A missing CA or client key would otherwise surface only as endless reconnect failures.
    tls = config.mqtt.tls
    problems += [
        f"{path}: mqtt.tls.{name}: {problem}"
        for name in ("ca_file", "cert_file", "key_file")
        if (problem := _unreadable(getattr(tls, name))) is not None
    ]
    if problems:
        raise ConfigError(problems)
    return config


def _unreadable(path: Path | None) -> str | None:
    if path is None:
        return None
    try:
        check_regular_file(path)
    except TextFileError as exc:
        return f"{path} {exc}"
    return None


def _reveal_problem(secret: SecretSource, environ: Mapping[str, str]) -> str | None:
    try:
        secret.reveal(environ=environ)
    except ConfigError as exc:
        return str(exc)
    return None


def secret_sources(config: ServiceConfig) -> list[tuple[str, SecretSource]]:
    """Every secret the configuration names, with the field it is at."""
    found = []
    if config.mqtt.password is not None:
        found.append(("mqtt.password", config.mqtt.password))
    auth = config.metrics.auth
    if auth is not None:
        for name in ("password", "token"):
            secret = getattr(auth, name)
            if secret is not None:
                found.append((f"metrics.auth.{name}", secret))
    for index, camera in enumerate(config.cameras):
        if camera.password is not None:
            found.append((f"cameras[{index}] (id {camera.id!r}).password", camera.password))
    return found
