"""Where the zoo's caches live by default: `$XDG_CACHE_HOME/zoo/<name>`, else `~/.cache/zoo/<name>`.

XDG_CACHE_HOME is the freedesktop.org setting that pip, matplotlib and most Linux tools follow: a
user who moves their caches moves the zoo's with them, and the tests point it at a temporary folder
so that they never write into the home directory (tests/conftest.py).
"""
import os


def default_dir(name: str) -> str:
  """The default folder of the cache `name`; '~' is left in it for the reader to expand, so the
  default that `--help` shows reads the same on every machine."""
  base = os.environ.get('XDG_CACHE_HOME', '')
  if not os.path.isabs(base):  # unset, empty or relative: the specification says to ignore it
    base = os.path.join('~', '.cache')
  return os.path.join(base, 'zoo', name)
