"""Process setup shared by every entry point (training, sampling, evaluation)."""
import os


def setup_jax() -> None:
  import jax
  from absl import logging
  logging.set_verbosity(logging.WARNING)   # Orbax logs every file it renames at INFO
  cache = os.environ.get('LMR_COMPILATION_CACHE', os.path.expanduser('~/.cache/lmresearch/jax'))
  if cache:
    jax.config.update('jax_compilation_cache_dir', cache)
    jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.5)
  # Multi-process jobs (TPU pods, SLURM, or an explicit coordinator) initialize the runtime first.
  if os.environ.get('JAX_COORDINATOR_ADDRESS') or os.environ.get('LMR_DISTRIBUTED'):
    jax.distributed.initialize()
