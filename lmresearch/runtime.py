"""Process setup shared by every entry point (training, sampling, evaluation)."""
import contextlib
import os
import sys

from absl import flags


def split_cpu(cpu_devices: int = -1) -> None:
  """Ask XLA for several host devices (before JAX starts). Only the CPU platform is affected:
  on a GPU/TPU host jax.devices() still lists the accelerators."""
  flags = os.environ.get('XLA_FLAGS', '')
  if 'xla_force_host_platform_device_count' in flags or cpu_devices == 1:
    return
  n = cpu_devices if cpu_devices > 0 else len(os.sched_getaffinity(0))
  os.environ['XLA_FLAGS'] = f'{flags} --xla_force_host_platform_device_count={n}'.strip()


def setup_jax(cpu_devices: int = 1) -> None:
  split_cpu(cpu_devices)
  import jax
  from absl import logging
  logging.set_verbosity(logging.WARNING)   # Orbax logs every file it renames at INFO
  cache = os.environ.get('LMR_COMPILATION_CACHE', os.path.expanduser('~/.cache/lmresearch/jax'))
  if cache:
    jax.config.update('jax_compilation_cache_dir', cache)
    jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.5)
  init_distributed()


def init_distributed() -> None:
  """Joins a multi-process job before JAX starts its backends: explicitly with
  JAX_COORDINATOR_ADDRESS (host:port of process 0), JAX_NUM_PROCESSES and JAX_PROCESS_ID, or with
  LMR_DISTRIBUTED=1 through jax.distributed's own detection (Cloud TPU, SLURM). CPU processes
  exchange collectives over gloo."""
  import jax
  env = os.environ
  if not (env.get('JAX_COORDINATOR_ADDRESS') or env.get('LMR_DISTRIBUTED')):
    return
  kwargs = {}
  if env.get('JAX_COORDINATOR_ADDRESS'):
    missing = [k for k in ('JAX_NUM_PROCESSES', 'JAX_PROCESS_ID') if not env.get(k)]
    if missing and not env.get('LMR_DISTRIBUTED'):
      fail(f'JAX_COORDINATOR_ADDRESS is set but {" and ".join(missing)} not: set all three (or '
           'LMR_DISTRIBUTED=1 to let jax.distributed detect the cluster).')
    if not missing:
      kwargs = dict(coordinator_address=env['JAX_COORDINATOR_ADDRESS'],
                    num_processes=int(env['JAX_NUM_PROCESSES']),
                    process_id=int(env['JAX_PROCESS_ID']))
  jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  # SIGTERM goes to the trainer's handler (saves, then every process stops at one agreed step),
  # not to JAX's preemption service, which would take the signal and never tell the trainer.
  jax.config.update('jax_enable_preemption_service', False)
  # A process that stops sending heartbeats for this long is declared lost (JAX's default: 100 s).
  jax.distributed.initialize(heartbeat_timeout_seconds=int(env.get('LMR_HEARTBEAT_TIMEOUT', 30)),
                             **kwargs)
  from lmresearch.core import fileio
  fileio.set_primary(jax.process_index() == 0)   # results and reports are written once


def exit_lost_process(error) -> None:
  """A collective of a multi-process job failed: name the lost processes (the coordination
  service's view, once their heartbeats time out) in one line and exit now, skipping the shutdown
  barrier, which would wait for the lost ones and then abort."""
  import jax
  from jax._src import distributed
  n, me = jax.process_count(), jax.process_index()
  try:
    live = distributed.global_state.client.get_live_nodes(list(range(n)))
    lost = 'process ' + ', '.join(str(i) for i in range(n) if i not in live)
  except Exception as e:   # the service may itself be gone (process 0 was lost)
    lost = f'a process (the coordinator, process 0, is unreachable: {str(e).splitlines()[0]})'
  detail = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
  print(f'error: process {me} of {n}: lost {lost} of this job ({detail}). Rerun the job: it '
        'resumes from the last complete checkpoint.', file=sys.stderr, flush=True)
  os._exit(3)


@contextlib.contextmanager
def cli_errors(*expected):
  """Every CLI's one error wrapper: a ConfigError, a missing file or one of `expected` (the
  errors that CLI's input can cause) is one line `error: ...` and exit 2; a multi-process job
  that lost a process exits as `exit_lost_process` says; anything else is a bug and raises."""
  from lmresearch.core.errors import ConfigError
  try:
    yield
  except (ConfigError, FileNotFoundError, *expected) as e:
    fail(e)
  except Exception as e:
    import jax
    if isinstance(e, jax.errors.JaxRuntimeError) and jax.process_count() > 1:
      exit_lost_process(e)
    raise


def fail(message) -> None:
  """A command-line error: one line on stderr, exit code 2."""
  print(f'error: {message}', file=sys.stderr)
  sys.exit(2)


def check_args(argv, workdir, what: str, hint: str = '') -> None:
  """No positional arguments, and a --workdir (`what`: the run directory's role)."""
  if len(argv) > 1:
    fail(f'unexpected arguments {argv[1:]}{hint}.')
  if not workdir:
    fail(f'--workdir is required (the run directory {what}).')


def parse_flags(argv):
  """absl flag parsing, but a bad --config override is one line naming it, and exit code 2."""
  try:
    return flags.FLAGS(argv)
  except (flags.Error, AttributeError, KeyError, TypeError, ValueError) as e:
    msg = str(e).replace("\\'", "'").replace('\\n', ' ')
    if len(msg) > 1 and msg[0] == msg[-1] and msg[0] in '\'"':
      msg = msg[1:-1]
    msg = ' '.join(msg.split())
    bad = [a for a in argv[1:] if a.startswith('--config.') and
           any(part and part in msg for part in a.split('=')[0].split('.')[1:])]
    where = f'{bad[-1]}: ' if bad and isinstance(e, (AttributeError, KeyError)) else ''
    kind = 'unknown config key ' if isinstance(e, (AttributeError, KeyError)) else ''
    print(f'error: {where}{kind}{msg}', file=sys.stderr)
    sys.exit(2)
