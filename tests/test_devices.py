"""The tests marked ``devices(n)`` (tests/devices.py), run in a process with their
``n`` fake devices; the suite's own processes have fewer."""

import pytest

from tests import devices


def test_the_tests_that_need_more_devices_pass_with_them(pytestconfig):
  deferred = pytestconfig.stash[devices.DEFERRED]
  if not deferred:
    pytest.skip(f"no test collected with it needs more than this process's "
                f"{devices.available()} devices")
  for n, nodeids in sorted(deferred.items()):
    done = devices.run_with_devices(n, nodeids)
    report = done.stdout[-6000:] + done.stderr[-2000:]
    assert done.returncode == 0, report
    assert devices.passed(done.stdout) == len(nodeids), report
