"""`ConfigError`, the operator-facing configuration error, and helpers that word its lines."""

from __future__ import annotations

from pydantic_core import PydanticCustomError


class ConfigError(Exception):
    """A configuration problem, worded for the operator: its str is the whole message.

    One line per problem, each naming the file and the field path. Never contains the value
    of a secret field.
    """

    def __init__(self, problems: list[str] | str) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))

    def __str__(self) -> str:
        return "\n".join(self.problems)


def field_error(field: str, message: str) -> PydanticCustomError:
    """An error from a model validator that `ConfigError` reports at `<model>.<field>`."""
    return PydanticCustomError("config", "{message}", {"message": message, "field": field})


def short(value: object, *, limit: int = 60) -> str:
    """repr(value), cut to `limit` characters: for keys and ids quoted in messages."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
