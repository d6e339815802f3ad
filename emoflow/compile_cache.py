"""JAX's persistent compilation cache for emoflow's commands: compiled programs kept between runs.

`emoflow predict` compiles every stage for the video's frame size, which on
a CPU takes longer than labelling a short clip. With the cache on, a later
run (another video of the same size, the same model and emoflow) loads the
programs instead. Where it lives: --compile-cache DIR, else
$EMOFLOW_COMPILE_CACHE, else a JAX_COMPILATION_CACHE_DIR the user set for
JAX, else `jax/` in emoflow's cache (emoflow.starter.cache_dir); the value
"off" turns it off. Every program is kept, however fast it compiled: a run's
programs are small and many. XLA checks a loaded program against the host's
CPU features, so a cache shared between different machines recompiles
rather than fails.
"""

import os

import jax

OFF = "off"
ENV = "EMOFLOW_COMPILE_CACHE"


def enable(setting: str | None = None) -> str | None:
  """Turns the cache on in `setting`'s directory (module docstring); returns it, None when off."""
  from emoflow import starter  # noqa: PLC0415 - starter imports the pipeline; callers import this early
  setting = setting or os.environ.get(ENV) or None
  if setting == OFF:
    jax.config.update("jax_enable_compilation_cache", False)
    return None
  if setting is None and jax.config.jax_compilation_cache_dir:
    return jax.config.jax_compilation_cache_dir  # the user's own JAX setting
  directory = os.path.abspath(os.path.expanduser(setting or os.path.join(starter.cache_dir(),
                                                                         "jax")))
  jax.config.update("jax_enable_compilation_cache", True)
  jax.config.update("jax_compilation_cache_dir", directory)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
  return directory
