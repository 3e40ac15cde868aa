"""vlkg.checkpoint_mirror: which file systems orbax writes itself, and the mirror of
the others (TensorFlow's ram://) with step directories made by hand."""

import os
import uuid

from vlkg import checkpoint_mirror as mirror_lib, files


def _step(root, name, complete=True):
  files.makedirs(f"{root}/{name}/default")
  files.atomic_write(f"{root}/{name}/default/data", f"step {name}")
  if complete:
    files.atomic_write(f"{root}/{name}/{mirror_lib.COMMIT_FILE}", "")


def test_native_file_systems():
  assert mirror_lib.native("/runs/a/checkpoints") and mirror_lib.native("gs://b/c")
  assert not mirror_lib.native("ram://a/checkpoints")


def test_mirror_downloads_complete_steps_and_uploads_new_ones():
  remote = f"ram://mirror-{uuid.uuid4().hex[:8]}/checkpoints"
  _step(remote, "10")
  _step(remote, "20", complete=False)  # an upload cut short
  assert mirror_lib.finished_steps(remote) == ["10"]
  m = mirror_lib.Mirror(remote)
  try:
    assert sorted(os.listdir(m.local)) == ["10"]
    assert open(f"{m.local}/10/default/data").read() == "step 10"
    _step(m.local, "20")  # orbax saved 20 again, and its policy deleted 10
    _step(m.local, "30", complete=False)  # still being written: not uploaded
    files.rmtree(f"{m.local}/10")
    m.push()
    assert mirror_lib.finished_steps(remote) == ["20"]
    assert files.read_bytes(f"{remote}/20/default/data") == b"step 20"
    assert not files.exists(f"{remote}/10/default/data")
    assert not files.exists(f"{remote}/30/default/data")
    local_root = os.path.dirname(m.local)
  finally:
    m.close()
  assert not os.path.exists(local_root)
