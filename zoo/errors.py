"""The one exception type the entry points turn into a single line and a non-zero exit."""


class ZooError(ValueError):
  """A problem with the user's input or environment; the message names it and the fix."""
