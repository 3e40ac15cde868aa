"""conftest.py's file order for the test workers names files that exist."""

import os

import conftest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_longest_first_names_existing_test_files_once():
  paths = conftest.LONGEST_FIRST
  assert len(set(paths)) == len(paths)
  for path in paths:
    assert os.path.isfile(os.path.join(ROOT, path)), path
