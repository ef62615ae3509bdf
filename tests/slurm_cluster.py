"""A one-node SLURM cluster on localhost for tests: munged, slurmctld and slurmd from Debian's
`slurm-wlm` and `munge` packages (scripts/test.sh installs them where it can), on free ports, with
no cgroups (process tracking by /proc), state under a temporary directory.

`start(tmp)` returns the environment to run SLURM commands in (SLURM_CONF set), or raises
`Unavailable` with the reason; `stop(env)` shuts the daemons down.
"""
import os
import shutil
import socket
import subprocess
import time


NODE = 'lmrnode'


class Unavailable(RuntimeError):
  pass


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def _run(cmd, env=None):
  return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60)


def start(tmp) -> dict:
  for tool in ('slurmctld', 'slurmd', 'sbatch', 'squeue', 'munged'):
    if not shutil.which(tool):
      raise Unavailable(f'{tool} is not installed (apt-get install slurm-wlm munge; '
                        'scripts/test.sh does this when run as root)')
  if os.geteuid() != 0:
    raise Unavailable('the test cluster runs its daemons as root; this user is not root')
  started_munge = False
  if _run(['pgrep', '-x', 'munged']).returncode:
    if not os.path.exists('/etc/munge/munge.key'):
      _run(['mungekey', '--create'])
    os.makedirs('/run/munge', exist_ok=True)
    out = _run(['munged', '--force'])
    if out.returncode:
      raise Unavailable(f'munged would not start: {out.stderr.strip()[-300:]}')
    started_munge = True
  root = os.path.join(str(tmp), 'slurm')
  for d in ('state', 'spool', 'log'):
    os.makedirs(os.path.join(root, d), exist_ok=True)
  host = socket.gethostname().split('.')[0]
  conf = os.path.join(root, 'slurm.conf')
  with open(conf, 'w') as f:
    f.write('\n'.join([
        'ClusterName=lmrtest', f'SlurmctldHost={host}(127.0.0.1)', 'SlurmUser=root',
        'SlurmdUser=root', 'AuthType=auth/munge', 'CredType=cred/munge',
        f'SlurmctldPort={_free_port()}', f'SlurmdPort={_free_port()}',
        f'StateSaveLocation={root}/state', f'SlurmdSpoolDir={root}/spool',
        f'SlurmctldPidFile={root}/slurmctld.pid', f'SlurmdPidFile={root}/slurmd.pid',
        f'SlurmctldLogFile={root}/log/slurmctld.log', f'SlurmdLogFile={root}/log/slurmd.log',
        'ProctrackType=proctrack/linuxproc', 'TaskPlugin=task/none',
        'JobAcctGatherType=jobacct_gather/none', 'SelectType=select/cons_tres',
        'SelectTypeParameters=CR_CPU', 'SchedulerType=sched/builtin', 'ReturnToService=2',
        'MpiDefault=none',
        # A fixed node name (slurmd -N), so a host name with dots does not matter.
        f'NodeName={NODE} NodeAddr=127.0.0.1 CPUs={os.cpu_count()} State=UNKNOWN',
        'PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES',
    ]) + '\n')
  env = {**os.environ, 'SLURM_CONF': conf, 'LMR_TEST_MUNGE': '1' if started_munge else ''}
  for daemon in (['slurmctld'], ['slurmd', '-N', NODE]):
    out = _run(daemon + ['-f', conf], env)
    if out.returncode:
      stop(env)
      raise Unavailable(f'{daemon[0]} would not start: {out.stderr.strip()[-300:]}')
  deadline = time.time() + 30
  while time.time() < deadline:
    out = _run(['sinfo', '-h', '-o', '%T'], env)
    if out.returncode == 0 and out.stdout.strip() in ('idle', 'mixed'):
      return env
    time.sleep(0.5)
  log = open(os.path.join(root, 'log', 'slurmd.log')).read()[-500:] if os.path.exists(
      os.path.join(root, 'log', 'slurmd.log')) else ''
  stop(env)
  raise Unavailable(f'the node did not become idle in 30 s: {out.stdout.strip()} {log}')


def stop(env) -> None:
  _run(['scontrol', 'shutdown'], env)
  root = os.path.dirname(env['SLURM_CONF'])
  for pid_file in ('slurmctld.pid', 'slurmd.pid'):
    try:
      os.kill(int(open(os.path.join(root, pid_file)).read()), 15)
    except (OSError, ValueError):
      pass
  if env.get('LMR_TEST_MUNGE'):   # the munged this cluster started
    _run(['pkill', '-x', 'munged'])
