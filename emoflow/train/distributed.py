"""Joining a multi-host job: `jax.distributed` on SLURM, Open MPI or explicit coordinator flags.

Every process of a job runs the same command; after `initialize`, the data
mesh spans the devices of all processes, each process feeds its own share of
every global batch, and process 0 alone writes files other than checkpoints
(orbax writes those once, from all processes together). A single process
needs none of this and calls nothing.
"""

import os
from typing import Mapping

import jax


def _task_count(env: Mapping[str, str]) -> tuple[str, int] | None:
  """(launcher, processes) when a launcher started this process as one of several."""
  # srun sets SLURM_STEP_NUM_TASKS per job step; SLURM_NTASKS alone is also set in a batch
  # script's own shell, where one process must not wait for peers that never start.
  for launcher, key in (("SLURM", "SLURM_STEP_NUM_TASKS"), ("Open MPI", "OMPI_COMM_WORLD_SIZE")):
    if env.get(key, "").isdigit() and int(env[key]) > 1:
      return launcher, int(env[key])
  return None


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, env: Mapping[str, str] | None = None) -> str | None:
  """Joins the job configured by the arguments or detected in `env`; what was joined, or None.

  Explicit arguments win and must come together (coordinator HOST:PORT, the
  number of processes, this one's index). Otherwise a SLURM step or an Open
  MPI job of more than one task is joined with JAX's own detection.
  """
  env = os.environ if env is None else env
  explicit = (coordinator_address, num_processes, process_id)
  if any(v is not None for v in explicit):
    if any(v is None for v in explicit):
      raise ValueError("--coordinator_address, --num_processes and --process_id go together")
    if not 0 <= process_id < num_processes:
      raise ValueError(f"--process_id {process_id} is not in 0..{num_processes - 1}")
    jax.distributed.initialize(coordinator_address, num_processes, process_id)
    return f"{num_processes} processes via {coordinator_address}"
  detected = _task_count(env)
  if detected is None:
    return None
  jax.distributed.initialize()
  launcher, count = detected
  return f"{count} processes via {launcher}"


def is_main_process() -> bool:
  """Process 0 writes the run's files (config, logs, plots, results)."""
  return jax.process_index() == 0
