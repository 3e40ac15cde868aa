"""Tests for vlkg.files.atomic_write."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from vlkg.files import atomic_write


def test_writes_bytes_str_and_callable(tmp_path):
  b = atomic_write(tmp_path / "b.bin", b"\x00\x01\xff")
  assert b == str(tmp_path / "b.bin")
  assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01\xff"
  # str is UTF-8 with newlines kept as written.
  atomic_write(tmp_path / "s.txt", "é\tx\r\ny\n")
  assert (tmp_path / "s.txt").read_bytes() == "é\tx\r\ny\n".encode("utf-8")
  atomic_write(tmp_path / "a.npz", lambda f: np.savez(f, x=np.arange(3)))
  with np.load(tmp_path / "a.npz") as z:
    np.testing.assert_array_equal(z["x"], [0, 1, 2])
  assert sorted(os.listdir(tmp_path)) == ["a.npz", "b.bin", "s.txt"]


def test_makes_missing_directories_and_replaces(tmp_path):
  path = tmp_path / "x" / "y" / "c.json"
  atomic_write(path, json.dumps({"a": 1}))
  atomic_write(path, json.dumps({"a": 2}))
  assert json.loads(path.read_text()) == {"a": 2}
  assert os.listdir(path.parent) == ["c.json"]


def test_failure_keeps_old_file_and_leaves_no_tmp(tmp_path):
  path = tmp_path / "keep.txt"
  atomic_write(path, "old\n")

  def half_then_fail(f):
    f.write(b"new but half")
    raise RuntimeError("disk full")

  with pytest.raises(RuntimeError, match="disk full"):
    atomic_write(path, half_then_fail)
  assert path.read_text() == "old\n"
  assert os.listdir(tmp_path) == ["keep.txt"]


def test_failure_with_no_old_file_leaves_nothing(tmp_path):
  with pytest.raises(TypeError):
    atomic_write(tmp_path / "n.bin", 3)  # neither bytes, str nor callable
  assert os.listdir(tmp_path) == []


def test_read_json_names_the_file_line_and_column(tmp_path):
  from vlkg.files import read_json
  path = tmp_path / "a.json"
  path.write_text('{"a": 1,\n "b": }')
  with pytest.raises(KeyError, match=r"a\.json: malformed JSON \(Expecting value at line 2 column 7\)"):
    read_json(path, KeyError)
  path.write_text('[1, 2]')
  assert read_json(path) == [1, 2]
