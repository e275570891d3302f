"""Load TOML into pydantic models, turning validation errors into one clear line."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import TypeVar, get_args

from pydantic import BaseModel, ValidationError

from usnav.errors import ConfigError

M = TypeVar("M", bound=BaseModel)


def format_validation_error(exc: ValidationError, model: type[BaseModel], prefix: str = "") -> str:
    """One line per problem: ``key.path: message (allowed: ...)``, or what was expected and
    what the file gave (``key 'a.b': Input should be greater than 0, got -5``); first problem
    first.
    ``prefix`` (e.g. ``"registration."``) is put before every key path: the table the model
    was read from."""
    parts = []
    for err in exc.errors():
        loc = prefix + (".".join(str(x) for x in err["loc"]) or "(top level)")
        kind = err["type"]
        if kind == "extra_forbidden":
            allowed = _allowed_keys(model, err["loc"][:-1])
            parts.append(f"unknown key '{loc}'" + (f" (allowed: {allowed})" if allowed else ""))
        elif kind == "missing":
            parts.append(f"missing key '{loc}'")
        elif kind == "value_error" and isinstance(err.get("input"), dict):
            # a table's own check across its keys (a model validator): its message names the
            # keys; "key '(top level)': Value error, …, got a table" said nothing more
            table = (prefix + ".".join(str(x) for x in err["loc"])).rstrip(".")
            msg = str(err["msg"]).removeprefix("Value error, ")
            parts.append(f"[{table}] {msg}" if table else msg)
        elif kind == "value_error" and isinstance(err.get("input"), list | tuple):
            # a key's own check on a list (a matrix): its message says what is wrong with
            # the numbers; ", got a list of 4" after "Value error, …" said nothing more
            parts.append(f"key '{loc}': {str(err['msg']).removeprefix('Value error, ')}")
        else:
            seen = f", got {_seen(err['input'])}" if "input" in err else ""
            parts.append(f"key '{loc}': {err['msg']}{seen}")
    return "; ".join(parts)


def _seen(value: object, limit: int = 60) -> str:
    """What a file gave for a key, said briefly (a table or a list by its kind, not its
    contents; other values as TOML writes them, cut at ``limit`` characters)."""
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list | tuple):
        return f"a list of {len(value)}"
    if isinstance(value, bool):
        return "true" if value else "false"
    text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _allowed_keys(model: type[BaseModel], loc: tuple) -> str:
    current: type[BaseModel] | None = model
    for part in loc:
        if current is None or isinstance(part, int):
            continue
        field = current.model_fields.get(str(part))
        candidates = [field.annotation] if field else []
        candidates += list(get_args(field.annotation)) if field else []
        current = next(
            (a for a in candidates if isinstance(a, type) and issubclass(a, BaseModel)), None
        )
    if current is None:
        return ""
    return ", ".join(current.model_fields)


def load_toml_model(path: str | Path, model: type[M]) -> M:
    """Read ``path`` (TOML) and validate it as ``model``.

    Raises
    ------
    ConfigError
        Missing file, TOML syntax error, unknown key, wrong type or out-of-range value; the
        message names the file and the key and says what is allowed.
    """
    p = Path(path)
    if not p.exists():
        raise ConfigError(p, "no such file")
    if p.is_dir():
        raise ConfigError(p, "is a folder, expected a .toml file")
    try:
        raw = tomllib.loads(p.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(p, f"TOML syntax error: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(p, "not a UTF-8 text file") from exc
    except OSError as exc:  # permissions, an I/O error
        raise ConfigError.unreadable(p, exc) from None
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(p, format_validation_error(exc, model)) from exc
