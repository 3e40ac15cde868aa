"""vlkg.xla_workarounds: its flag joins XLA_FLAGS once, for jaxlib 0.10."""

import os
import subprocess
import sys

from vlkg import xla_workarounds as W

ADDED = "--xla_cpu_collective_call_terminate_timeout_seconds=600"


def test_the_flag_joins_existing_flags_once():
  env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
  assert W.apply(env, "0.10.2") == ADDED.split()
  assert env["XLA_FLAGS"] == "--xla_force_host_platform_device_count=8 " + ADDED
  assert W.apply(env, "0.10.2") == []
  assert env["XLA_FLAGS"].count("timeout") == 1


def test_a_users_own_setting_and_other_jaxlibs_are_left_alone():
  env = {"XLA_FLAGS": "--xla_cpu_collective_call_terminate_timeout_seconds=60"}
  assert W.apply(env, "0.10.2") == []
  assert env["XLA_FLAGS"] == "--xla_cpu_collective_call_terminate_timeout_seconds=60"
  env = {}
  assert W.apply(env, "0.11.0") == [] and env == {}
  assert W.apply(env, "0.10.0") and env["XLA_FLAGS"] == ADDED


def test_importing_vlkg_sets_it_before_jax_computes():
  code = ("import os, vlkg, jax.numpy as jnp; float(jnp.ones(3).sum()); "
          "print(os.environ['XLA_FLAGS'])")
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  out = subprocess.run([sys.executable, "-c", code], env=env, check=True,
                       capture_output=True, text=True).stdout
  assert out.strip() == ADDED
