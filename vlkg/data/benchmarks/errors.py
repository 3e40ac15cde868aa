"""The one error type that the benchmark readers and writers raise for bad files.

Every message names the file, and where it applies the item (a list index for ARO, a
string key for SugarCrepe) and the field, for example::

  vg_relation.json: item 12: missing field 'true_caption'
  add_att.json: key '7': field 'caption' must be a string, got int
"""

from __future__ import annotations

import json
import os
from typing import Any

from vlkg import files


class BenchmarkFormatError(ValueError):
  """A benchmark file that does not follow its official layout.

  Attributes:
    path: The file (or folder) at fault, as given by the caller.
    item: The list index (int) or dict key (str) of the bad item, or None.
    field: The bad or missing field name, or None.
    problem: The description of the problem, without the location prefix.
  """

  def __init__(
      self,
      path: str | os.PathLike[str],
      problem: str,
      *,
      item: int | str | None = None,
      field: str | None = None,
  ) -> None:
    """Builds the error.

    Args:
      path: The file or folder at fault.
      problem: What is wrong, e.g. "missing field 'true_caption'".
      item: The list index (rendered ``item 12``) or dict key (rendered
        ``key '12'``) of the bad item, if any.
      field: The field at fault, if any. Only stored; name it in ``problem`` too.
    """
    self.path = os.fspath(path)
    self.item = item
    self.field = field
    self.problem = problem
    parts = [self.path]
    if isinstance(item, str):
      parts.append(f"key {item!r}")
    elif item is not None:
      parts.append(f"item {item}")
    parts.append(problem)
    super().__init__(": ".join(parts))

  def __reduce__(self):  # Keeps the keyword-only arguments through pickling.
    return (_rebuild, (self.path, self.problem, self.item, self.field))


def _rebuild(path: str, problem: str, item: int | str | None,
             field: str | None) -> BenchmarkFormatError:
  return BenchmarkFormatError(path, problem, item=item, field=field)


def load_json(path: str | os.PathLike[str]) -> Any:
  """Loads a UTF-8 JSON file, naming the file when it does not parse.

  Args:
    path: The file to read.

  Returns:
    The decoded JSON value.

  Raises:
    FileNotFoundError: If the file does not exist.
    BenchmarkFormatError: If the file is not valid UTF-8 JSON (e.g. truncated).
  """
  try:
    with files.open(path, "r", encoding="utf-8") as f:
      return json.load(f)
  except json.JSONDecodeError as e:
    raise BenchmarkFormatError(
        path, f"invalid JSON ({e.msg} at line {e.lineno} column {e.colno})"
    ) from e
  except UnicodeDecodeError as e:
    raise BenchmarkFormatError(path, f"not UTF-8 text ({e.reason})") from e


def type_name(value: Any) -> str:
  """The JSON-ish name of a value's type, for error messages."""
  if value is None:
    return "null"
  return type(value).__name__


def require_field(
    record: Any,
    field: str,
    path: str | os.PathLike[str],
    item: int | str,
) -> Any:
  """Returns ``record[field]``, raising a located error if it is missing.

  Args:
    record: The item, which must be a JSON object (dict).
    field: The field to fetch.
    path: The file, for the error message.
    item: The item index or key, for the error message.

  Raises:
    BenchmarkFormatError: If ``record`` is not a dict or lacks ``field``.
  """
  if not isinstance(record, dict):
    raise BenchmarkFormatError(
        path, f"item must be a JSON object, got {type_name(record)}", item=item)
  if field not in record:
    raise BenchmarkFormatError(
        path, f"missing field {field!r}", item=item, field=field)
  return record[field]


def require_str(
    record: Any,
    field: str,
    path: str | os.PathLike[str],
    item: int | str,
) -> str:
  """Like `require_field`, and checks that the value is a string."""
  value = require_field(record, field, path, item)
  if not isinstance(value, str):
    raise BenchmarkFormatError(
        path, f"field {field!r} must be a string, got {type_name(value)}",
        item=item, field=field)
  return value
