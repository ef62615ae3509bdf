"""What the experiment files share: loading a configs/ family by name (experiments are configs)."""
import importlib.util
import os

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..')


def load_config(name: str, arg=None):
  """configs/<name>.py's get_config(arg)."""
  spec = importlib.util.spec_from_file_location(f'configs_{name}',
                                                os.path.join(ROOT, 'configs', f'{name}.py'))
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod.get_config(arg)
