"""Load TOML into pydantic models, turning validation errors into one clear line.

A file's values are validated strictly (:func:`validate_file_data`): ``true`` is not a number,
``"2.0"`` is not a number, ``1`` is not ``true``; a whole number is a number.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import tomllib
from pathlib import Path
from typing import Any, TypeVar, get_args

from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import InitErrorDetails, PydanticCustomError

from usnav.errors import ConfigError

M = TypeVar("M", bound=BaseModel)

#: What a key of each type takes, said to the person who wrote the file (pydantic's error type
#: -> words; the strict types' errors, and the lax ones' for models built in code)
_EXPECTED = {
    "int_type": "a whole number",
    "int_from_float": "a whole number",
    "int_parsing": "a whole number",
    "float_type": "a number",
    "float_parsing": "a number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "string_type": "a string in quotes",
    "list_type": "a list",
    "tuple_type": "a list",
    "dict_type": "a table",
    "model_type": "a table",
}


def validate_file_data(model: type[M], data: Any) -> M:
    """Validate what a user's file gave (TOML's tables, lists, strings, numbers, booleans) as
    ``model``, strictly.

    pydantic's lax mode reads ``true`` as 1 for a number and ``"2.0"`` as 2.0, and ``1`` or
    ``"yes"`` as true for a plain ``bool``: a file that said ``sweep_climbs = true`` ran with 1.
    Strict mode refuses them all and still reads a whole number as a float. The data go
    through JSON so that strict mode takes a list for a tuple and a string for a path, as a
    file writes them (strict Python input asks for tuple and Path objects). A date or time
    (TOML's unquoted ``1979-05-27``) is refused: no option takes one.

    Raises
    ------
    pydantic.ValidationError
        Every problem, as :func:`format_validation_error` says them.
    """
    found = _first_date_time(data, ())
    if found is not None:
        loc, value = found
        problem = PydanticCustomError("date_time", "a TOML date or time is not a value here")
        detail: InitErrorDetails = {"type": problem, "loc": loc, "input": value}
        raise ValidationError.from_exception_data(model.__name__, [detail])
    return model.model_validate_json(json.dumps(data), strict=True)


def _first_date_time(data: Any, loc: tuple) -> tuple[tuple, Any] | None:
    """Where the first date or time value lies in ``data`` (and that value), else None."""
    if isinstance(data, dt.date | dt.time):
        return loc, data
    if isinstance(data, dict):
        items = list(data.items())
    elif isinstance(data, list):
        items = list(enumerate(data))
    else:
        return None
    for key, value in items:
        found = _first_date_time(value, (*loc, key))
        if found is not None:
            return found
    return None


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
        elif kind in _EXPECTED and "input" in err:
            # a value of the wrong type: what the key takes (with its default as an example)
            # and what the file gave; a boolean given for a number is said to be one
            expected = _EXPECTED[kind]
            example = _example(model, err["loc"], kind)
            given = err["input"]
            note = ""
            if isinstance(given, bool) and expected != "true or false":
                note = " (true and false are not numbers)"
            elif kind.startswith("int") and isinstance(given, float) and given.is_integer():
                note = " (write it without a decimal point)"
            parts.append(
                f"key '{loc}': expected {expected}"
                + (f" (e.g. {example})" if example else "")
                + f", got {_seen(given)}{note}"
            )
        else:
            seen = f", got {_seen(err['input'])}" if "input" in err else ""
            # pydantic puts "Value error, " before a key's own check's message: said nothing
            msg = str(err["msg"]).removeprefix("Value error, ")
            parts.append(f"key '{loc}': {msg}{seen}")
    return "; ".join(parts)


def _example(model: type[BaseModel], loc: tuple, kind: str) -> str:
    """The default of the key at ``loc`` (its element's, for a list) when it is a value of
    the kind the error says is expected, as TOML writes it; else ''."""
    field = _field_at(model, loc)
    if field is None or field.is_required():
        return ""
    value = field.get_default(call_default_factory=True)
    if isinstance(value, list | tuple) and loc and isinstance(loc[-1], int):
        value = value[loc[-1]] if loc[-1] < len(value) else (value[0] if value else None)
    if kind.startswith("bool"):
        return ("true" if value else "false") if isinstance(value, bool) else ""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return ""
    if kind.startswith("int"):
        return str(value) if isinstance(value, int) else ""
    return f"{value:g}" if kind.startswith("float") else ""


def _field_at(model: type[BaseModel], loc: tuple) -> FieldInfo | None:
    """The field a validation error's ``loc`` points into (the last named key of it)."""
    current: type[BaseModel] | None = model
    field = None
    for part in loc:
        if isinstance(part, int):
            continue
        if current is None:
            return None
        field = current.model_fields.get(str(part))
        if field is None:
            return None
        candidates = [field.annotation, *get_args(field.annotation)]
        current = next(
            (a for a in candidates if isinstance(a, type) and issubclass(a, BaseModel)), None
        )
    return field


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


_AT_LINE = re.compile(r"\(at line (\d+), column (\d+)\)")


def toml_syntax_problem(text: str, exc: tomllib.TOMLDecodeError) -> str:
    """What a TOML syntax error says, in words for a person: a key (or table) given twice is
    named with its line ("key 'margin_error_mm' is given twice (line 3): keep one"), not only
    tomllib's "Cannot overwrite a value (at line 3, column 20)"; other errors as tomllib
    words them."""
    message = str(exc)
    found = _AT_LINE.search(message)
    if found and ("Cannot overwrite" in message or "Cannot declare" in message):
        line_no = int(found.group(1))
        lines = text.splitlines()
        line = lines[line_no - 1].strip() if 0 < line_no <= len(lines) else ""
        table = re.fullmatch(r"\[+\s*([^\]]+?)\s*\]+", line)
        if table:
            return f"table [{table.group(1)}] is given twice (line {line_no}): merge them into one"
        key = line.split("=", 1)[0].strip()
        if "=" in line and key:
            return f"key '{key}' is given twice (line {line_no}): keep one"
    return f"TOML syntax error: {message}"


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
        text = p.read_text(encoding="utf-8")
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(p, toml_syntax_problem(text, exc)) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(p, "not a UTF-8 text file") from exc
    except OSError as exc:  # permissions, an I/O error
        raise ConfigError.unreadable(p, exc) from None
    try:
        return validate_file_data(model, raw)
    except ValidationError as exc:
        other = _other_kind_of_file(raw, model)
        if other is not None:  # the pile of unknown keys did not say which file was mixed up
            (found, tables), (wanted, example) = other
            raise ConfigError(
                p, f"is {found} (its {tables}), not {wanted}", f"give {wanted} ({example}) here"
            ) from exc
        raise ConfigError(p, format_validation_error(exc, model)) from exc


#: usnav's kinds of TOML file, each with the tables only it has (session 42: a device file
#: given as --calibration was refused with eight "unknown key" clauses, never saying so)
_FILE_KINDS = (
    ("a device file", "devices/*.toml", ("probe", "playback")),
    ("a calibration file", "calibration/*.toml", ("spatial", "temporal", "pivot")),
    (
        "a pipeline options file",
        "usnav run --options",
        ("display", "margins", "registration_budget"),
    ),
)


def _other_kind_of_file(
    raw: dict, model: type[BaseModel]
) -> tuple[tuple[str, str], tuple[str, str]] | None:
    """((what ``raw`` is, the tables that say so), (what ``model`` reads, an example)) when
    ``raw`` has the tables of another kind of usnav file than the one ``model`` reads
    (:data:`_FILE_KINDS`), else None."""
    fields = set(model.model_fields)
    wanted = next((k for k in _FILE_KINDS if set(k[2]) <= fields), None)
    if wanted is None:
        return None
    for kind, _, tables in _FILE_KINDS:
        if kind == wanted[0]:
            continue
        seen = [t for t in tables if isinstance(raw.get(t), dict) and not _takes_table(model, t)]
        if seen:
            return (kind, ", ".join(f"[{t}]" for t in seen)), (wanted[0], wanted[1])
    return None


def _takes_table(model: type[BaseModel], name: str) -> bool:
    """Whether ``model``'s field ``name`` is a table (a model), not a plain value."""
    field = model.model_fields.get(name)
    if field is None:
        return False
    candidates = (field.annotation, *get_args(field.annotation))
    return any(isinstance(c, type) and issubclass(c, BaseModel) for c in candidates)
