"""What the experiment files share: loading a configs/ family by name (experiments are configs)."""
from lmresearch.training.config import config_file


def load_config(name: str, arg=None):
  """configs/<name>.py's get_config(arg)."""
  return config_file(name).get_config(arg)
