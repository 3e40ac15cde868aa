"""vlkg.xla_cpu: the YNNPACK fusion types are added to XLA_FLAGS, never over a
user's own choice."""

import os

from vlkg import xla_cpu  # importing vlkg configures this process's XLA_FLAGS


def test_adds_the_fusion_types_beside_other_flags():
  env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
  assert xla_cpu.configure(env) == ("--xla_force_host_platform_device_count=2 "
                                    "--xla_cpu_experimental_ynn_fusion_type=dot,reduce")
  assert env["XLA_FLAGS"].endswith("=dot,reduce")
  empty = {}
  xla_cpu.configure(empty)
  assert empty == {"XLA_FLAGS": "--xla_cpu_experimental_ynn_fusion_type=dot,reduce"}


def test_a_users_own_setting_wins():
  for own in ("--xla_cpu_experimental_ynn_fusion_type=",
              "--xla_cpu_experimental_ynn_fusion_type=dot,eltwise,reduce"):
    env = {"XLA_FLAGS": own}
    xla_cpu.configure(env)
    assert env == {"XLA_FLAGS": own}


def test_importing_vlkg_configured_this_process():
  assert "--xla_cpu_experimental_ynn_fusion_type=" in os.environ["XLA_FLAGS"]
