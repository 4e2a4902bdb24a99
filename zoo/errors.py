"""The one exception type the entry points turn into a single line and a non-zero exit."""


class ZooError(ValueError):
  """A problem with the user's input or environment; the message names it and the fix."""


def exit_with(error: ZooError):
  """The entry points' answer to a ZooError: one `error: <problem>; <fix>` line on stderr, status 1."""
  import sys
  print(f'error: {error}', file=sys.stderr, flush=True)
  sys.exit(1)
