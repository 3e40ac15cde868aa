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


# --- the path layer: local paths and URLs (TensorFlow's in-memory ram://) ------

import uuid

from vlkg import files


def _ram():
  """A fresh directory on TensorFlow's in-memory file system (per process)."""
  return f"ram://vlkg-test-{uuid.uuid4().hex[:8]}"


@pytest.mark.parametrize("where", ["local", "ram"])
def test_the_layer_reads_writes_lists_and_moves_alike(tmp_path, where):
  root = str(tmp_path) if where == "local" else _ram()
  assert files.is_local(root) == (where == "local")
  sub = f"{root}/a/b"
  files.makedirs(sub)
  files.makedirs(sub)  # exist_ok by default
  with pytest.raises(FileExistsError):
    files.makedirs(sub, exist_ok=False)
  atomic_write(f"{sub}/x.json", json.dumps({"v": 1, "long": "x" * 20}))
  atomic_write(f"{sub}/x.json", json.dumps({"v": 1}))  # shorter: the rest must go
  assert files.read_json(f"{sub}/x.json") == {"v": 1}
  files.append_text(f"{sub}/log.jsonl", '{"step": 1}\n')
  files.append_text(f"{sub}/log.jsonl", '{"step": 2}\n')
  with files.open(f"{sub}/log.jsonl") as f:
    assert f.read() == '{"step": 1}\n{"step": 2}\n'
  atomic_write(f"{sub}/p.npz", lambda f: np.savez(f, w=np.arange(4.0)))
  np.testing.assert_array_equal(files.load_npz(f"{sub}/p.npz")["w"], [0, 1, 2, 3])
  assert files.read_bytes(f"{sub}/x.json") == b'{"v": 1}'
  assert files.getsize(f"{sub}/x.json") == 8
  assert files.isdir(sub) and not files.isfile(sub)
  assert files.isfile(f"{sub}/x.json") and not files.isdir(f"{sub}/x.json")
  assert sorted(files.listdir(sub)) == ["log.jsonl", "p.npz", "x.json"]
  assert files.listdir(f"{root}/a") == ["b"]
  with pytest.raises(FileNotFoundError):
    files.open(f"{sub}/missing.txt")
  with pytest.raises(FileNotFoundError):
    files.read_json(f"{sub}/missing.json")
  # A directory moves with its files; the target must not exist.
  files.rename(sub, f"{root}/moved")
  assert not files.exists(f"{sub}/x.json")
  assert files.read_json(f"{root}/moved/x.json") == {"v": 1}
  files.makedirs(f"{root}/other")
  with pytest.raises(FileExistsError):
    files.rename(f"{root}/moved", f"{root}/other")
  files.remove(f"{root}/moved/log.jsonl")
  assert sorted(files.listdir(f"{root}/moved")) == ["p.npz", "x.json"]
  files.rmtree(f"{root}/moved")
  assert not files.exists(f"{root}/moved/x.json")
  files.rmtree(f"{root}/never-there", ignore_errors=True)


def test_copy_tree_between_file_systems_writes_the_named_file_last(tmp_path,
                                                                   monkeypatch):
  src = tmp_path / "src"
  (src / "d" / "e").mkdir(parents=True)
  (src / "MANIFEST.json").write_text("{}")
  (src / "a.txt").write_text("a")
  (src / "d" / "e" / "b.bin").write_bytes(b"\x00b")
  order = []
  copy = files.copyfile
  monkeypatch.setattr(files, "copyfile", lambda s, d: (order.append(d), copy(s, d)))
  remote = _ram()
  files.copy_tree(str(src), remote, last="MANIFEST.json")
  assert order[-1] == f"{remote}/MANIFEST.json" and len(order) == 3
  assert files.read_bytes(f"{remote}/d/e/b.bin") == b"\x00b"
  # ... and back down, URL to local.
  files.copy_tree(remote, str(tmp_path / "back"))
  assert (tmp_path / "back" / "a.txt").read_text() == "a"
  assert (tmp_path / "back" / "d" / "e" / "b.bin").read_bytes() == b"\x00b"


def test_abspath_keeps_urls_and_expands_local_paths(monkeypatch, tmp_path):
  monkeypatch.chdir(tmp_path)
  monkeypatch.setenv("HOME", "/home/u")
  assert files.abspath("gs://bucket/runs/x/") == "gs://bucket/runs/x"
  assert files.abspath("ram://a") == "ram://a"
  assert files.abspath("run") == str(tmp_path / "run")
  assert files.abspath("~/run") == "/home/u/run"


def test_under_joins_only_relative_local_paths():
  assert files.under("gs://b/run", "tokenizer.model") == "gs://b/run/tokenizer.model"
  assert files.under("/runs/a", "bpe.txt.gz") == "/runs/a/bpe.txt.gz"
  assert files.under("/runs/a", "/abs/bpe.txt.gz") == "/abs/bpe.txt.gz"
  assert files.under("/runs/a", "ram://x/bpe") == "ram://x/bpe"
  assert files.under(None, "rel.model") == "rel.model"
