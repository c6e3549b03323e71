"""Argument checks shared by the public evaluation and preparation functions.

Each check refuses a bad value up front, before any model runs, with a message that names the argument, the value,
what is allowed and the fix: a `TypeError` for a value of the wrong kind, a `ValueError` for one of the right kind but
outside what works. `move_non_finite` keeps a NaN or infinite metric out of a results dict's numbers (it goes under
`missing`, with the reason), so a card or a table never shows it as a number.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Mapping, Sequence

import numpy as np


def show(value, width: int = 60) -> str:
    """`repr(value)`, cut to `width` characters (a message quotes the bad value, never a whole data set)."""
    text = repr(value)
    return text if len(text) <= width else text[: width - 3] + "..."


def _scalar(value):
    """A 0-d tensor or array as its Python number; anything else as it is."""
    if getattr(value, "ndim", None) == 0 and hasattr(value, "item"):
        return value.item()
    return value


def is_int(value) -> bool:
    """An int (numpy's and 0-d integer tensors included), not a bool."""
    value = _scalar(value)
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_int(name: str, value, minimum: int = 1, *, none: str | None = None, unit: str = "", note: str = "") -> None:
    """`value` is a whole number >= `minimum`; None too when `none` says what None means (e.g. "every row")."""
    if value is None and none is not None:
        return
    allowed = (f"None ({none}) or " if none else "") + "a whole number" + (f" of {unit}" if unit else "")
    allowed += f" >= {minimum}"
    if not is_int(value):
        raise TypeError(f"{name}={show(value)} is {kind(value)}: pass {allowed}.")
    if _scalar(value) < minimum:
        raise ValueError(f"{name}={_scalar(value)}: pass {allowed}{'; ' + note if note else ''}.")


def check_positive_int(name: str, value, *, none: str | None = None, unit: str = "", note: str = "") -> None:
    """`value` is a whole number >= 1 (or None, when `none` says what None means)."""
    check_int(name, value, 1, none=none, unit=unit, note=note)


def kind(value) -> str:
    """'a str', 'an int', ...: the type of `value` with its article, for messages."""
    name = type(value).__name__
    return f"{'an' if name[:1].lower() in 'aeiou' else 'a'} {name}"


def _interval(low, high, low_open: bool, high_open: bool) -> str:
    if low is not None and high is not None:
        return f"in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
    if low is not None:
        return f"{'>' if low_open else '>='} {low}"
    if high is not None:
        return f"{'<' if high_open else '<='} {high}"
    return "any finite number"


def check_number(name: str, value, low=None, high=None, *, low_open: bool = False, high_open: bool = False,
                 none: str | None = None, note: str = "") -> float | None:  # fmt: skip
    """`value` is a finite real number in the interval from `low` to `high` (open ends where `*_open`); None too when
    `none` says what None means. Returns it as a float."""
    if value is None and none is not None:
        return None
    interval = _interval(low, high, low_open, high_open)
    allowed = (f"None ({none}) or " if none else "") + f"a number {interval}"
    number = _scalar(value)
    if isinstance(number, bool) or not isinstance(number, numbers.Real):
        raise TypeError(f"{name}={show(value)} is {kind(value)}: pass {allowed}.")
    number = float(number)
    if not math.isfinite(number):
        raise ValueError(f"{name}={number} is not a finite number: pass {allowed}{'; ' + note if note else ''}.")
    below = low is not None and (number <= low if low_open else number < low)
    above = high is not None and (number >= high if high_open else number > high)
    if below or above:
        raise ValueError(f"{name}={number:g} is not {interval}: pass {allowed}{'; ' + note if note else ''}.")
    return number


def check_fraction(name: str, value, note: str = "") -> float:
    """`value` is a finite number in (0, 1] (a share that keeps at least something)."""
    return check_number(name, value, 0, 1, low_open=True, note=note)


def _or(choices: Sequence) -> str:
    shown = [c if isinstance(c, str) else repr(c) for c in choices]
    return shown[0] if len(shown) == 1 else ", ".join(shown[:-1]) + " or " + shown[-1]


def check_choice(name: str, value, choices: Sequence, note: str = "") -> None:
    """`value` is one of `choices`."""
    if not any(isinstance(value, type(choice)) and value == choice for choice in choices):
        raise ValueError(f"{name}={show(value)}: use {_or(choices)}{'; ' + note if note else ''}.")


def check_callable(name: str, value, *, optional: bool = False, what: str = "a function") -> None:
    if value is None and optional:
        return
    if not callable(value):
        raise TypeError(f"{name}={show(value)} is {kind(value)}, not callable: pass {what}"
                        f"{' or None' if optional else ''}.")  # fmt: skip


def _columns_text(columns: Iterable) -> str:
    parts = []
    for column in columns:
        names = (column,) if isinstance(column, str) else tuple(column)
        parts.append(repr(names[0]) + "".join(f" (or {n!r})" for n in names[1:]))
    return ", ".join(parts)


def check_sized(name: str, value, *, what: str = "a list", min_count: int = 1, unit: str = "examples") -> None:
    """`value` is a sized, indexable collection (a list, tuple, tensor, `datasets.Dataset`, ...), not a string or a
    dict, with at least `min_count` items."""
    if isinstance(value, (str, bytes)):
        raise TypeError(f"{name} is a string ({show(value)}), not {what}: pass {what}, e.g. [{show(value, 30)}].")
    if isinstance(value, Mapping):
        raise TypeError(f"{name} is a dict (keys {show(sorted(map(str, value)))}), not {what}: pass {what}.")
    if not hasattr(value, "__len__") or not hasattr(value, "__getitem__"):
        raise TypeError(f"{name} is {kind(value)}: pass {what}.")
    if len(value) < min_count:
        amount = "is empty" if len(value) == 0 else f"has {len(value)} {unit}"
        raise ValueError(f"{name} {amount}: pass at least {min_count} {unit}.")


def check_rows(rows, name: str, columns: Iterable = (), *, min_rows: int = 1, hint: str = "") -> None:
    """`rows` is a list of dicts (or a `datasets.Dataset`) of at least `min_rows` rows, each with `columns` (a column
    given as a tuple is a choice of names, e.g. `("labels", "label")`). `hint` is added to the column errors (e.g. how
    to make the rows)."""
    columns = list(columns)
    wanted = f", with {_columns_text(columns)}" if columns else ""
    example = ", e.g. [{" + ", ".join(f"{(c if isinstance(c, str) else c[0])!r}: ..." for c in columns) + "}, ...]"
    example = example if columns else ""
    if isinstance(rows, (str, bytes)):
        raise TypeError(f"{name} is a string ({show(rows)}), not rows: pass a list of dicts, one per example"
                        f"{wanted}{example}.")  # fmt: skip
    if isinstance(rows, Mapping):
        raise TypeError(
            f"{name} is a dict (keys {show(sorted(map(str, rows)))}), not a list of rows: pass a list of dicts, one "
            f"per example{wanted}. A dict of columns converts with "
            "[dict(zip(d, values)) for values in zip(*d.values())] or datasets.Dataset.from_dict(d)."
        )
    if not hasattr(rows, "__len__") or not hasattr(rows, "__getitem__"):
        raise TypeError(f"{name} is {kind(rows)}: pass a list of dicts (or a datasets.Dataset){wanted}.")
    if len(rows) < min_rows:
        amount = "is empty" if len(rows) == 0 else f"has {len(rows)} row(s)"
        raise ValueError(f"{name} {amount}: pass at least {min_rows} row(s){wanted}.")

    def lacking(names) -> list[str]:
        return [c if isinstance(c, str) else c[0] for c in columns
                if not any(n in names for n in ((c,) if isinstance(c, str) else c))]  # fmt: skip

    names = getattr(rows, "column_names", None)
    if names is not None:  # a datasets.Dataset: its columns, without reading every row
        if lacking(names):
            raise ValueError(f"{name} lacks the column(s) {lacking(names)}: each row needs {_columns_text(columns)} "
                             f"(it has {list(names)}).{' ' + hint if hint else ''}")  # fmt: skip
        return
    for index in range(len(rows)):
        row = rows[index]
        if not isinstance(row, Mapping):
            raise TypeError(f"{name}[{index}] is {kind(row)} ({show(row)}), not a dict: pass a list of "
                            f"dicts, one per example{wanted}{example}.")  # fmt: skip
        if lacking(row):
            raise ValueError(f"{name}[{index}] lacks {lacking(row)}: each row needs {_columns_text(columns)} (it has "
                             f"{sorted(map(str, row))}).{' ' + hint if hint else ''}")  # fmt: skip


def check_strings(name: str, values, *, min_count: int = 0, unit: str = "strings") -> None:
    """`values` is a list (or tuple) of strings, not one string."""
    if isinstance(values, str):
        raise TypeError(f"{name} is one string ({show(values)}), not a list of {unit}: pass [{show(values, 30)}].")
    if not isinstance(values, Sequence) and not hasattr(values, "__array__"):
        raise TypeError(f"{name} is {kind(values)}: pass a list of {unit}.")
    for index, value in enumerate(values):
        if not isinstance(value, str):
            raise TypeError(f"{name}[{index}]={show(value)} is {kind(value)}: pass a list of {unit} "
                            "(str).")  # fmt: skip
    if len(values) < min_count:
        raise ValueError(f"{name} is empty: pass at least {min_count} of them." if not len(values)
                         else f"{name} has {len(values)}: pass at least {min_count}.")  # fmt: skip


def numbers_array(name: str, values, *, min_count: int = 1, allow_inf: bool = False,
                  minimum: float | None = None) -> np.ndarray:  # fmt: skip
    """`values` (a list, array or tensor of numbers) as a float64 array with at least `min_count` numbers, none NaN
    (nor ±inf unless `allow_inf`) nor below `minimum`."""
    if isinstance(values, (str, bytes, Mapping)) or values is None:
        raise TypeError(f"{name}={show(values)} is {kind(values)}: pass a list (or array) of numbers.")
    if hasattr(values, "detach"):
        values = values.detach().cpu()
    try:
        array = np.asarray(values, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise TypeError(f"{name}={show(values)} is not a list of numbers: pass a list (or array) of numbers.") from None
    if array.size < min_count:
        raise ValueError(f"{name} is empty: pass at least {min_count} number(s)." if array.size == 0
                         else f"{name} has {array.size} number(s): pass at least {min_count}.")  # fmt: skip
    bad = np.isnan(array) if allow_inf else ~np.isfinite(array)
    if bad.any():
        raise ValueError(f"{name} holds {'NaN' if allow_inf else 'NaN or inf'} at position(s) "
                         f"{np.flatnonzero(bad)[:5].tolist()}: pass {'non-NaN' if allow_inf else 'finite'} numbers "
                         "(a NaN comes from a model whose logits are not finite).")  # fmt: skip
    if minimum is not None and (array < minimum).any():
        raise ValueError(f"{name} holds {array[array < minimum][0]:g} at position {int(np.argmax(array < minimum))}: "
                         f"every value is >= {minimum:g}.")  # fmt: skip
    return array


def check_same_length(first: str, first_len: int, second: str, second_len: int, note: str = "") -> None:
    """Paired inputs have one item each: `len(first) == len(second)`."""
    if first_len != second_len:
        raise ValueError(f"{first} has {first_len} item(s) but {second} has {second_len}: pass one of {second} per "
                         f"item of {first}{'; ' + note if note else ''}.")  # fmt: skip


def is_finite_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def move_non_finite(results: dict, reason: str) -> dict:
    """Move every scalar metric of `results` that came out NaN or ±inf to `results["missing"]` with `reason`, so it is
    never reported as a number (cards and tables show `missing` as n/a with the reason). Returns `results`."""
    missing = results.setdefault("missing", {})
    for key, value in list(results.items()):
        if isinstance(value, numbers.Real) and not isinstance(value, bool) and not math.isfinite(value):
            del results[key]
            missing[key] = f"came out {value} ({reason})"
    return results
