"""The one error type for bad configs and inputs (the lowest layer: every other module may raise it)."""


class ConfigError(ValueError):
  """A config or input problem, reported as one line naming the key before anything compiles."""
