"""IMDB sentiment: `python -m experiments.imdb [--flagfile=experiments/recipes/imdb_seed.flags]`.

`experiments.texts` with IMDB's defaults (the n-gram recipe, the best accuracy per minute; see
experiments/recipes/imdb_ngram.flags for its command and measured result; imdb_bilstm.flags and
imdb_seed.flags train the LSTMs).
`--mode=predict --workdir=W --text="..."` prints {"text": ..., "label": ..., "p_positive": ..., "top": ...} per text.
"""
from absl import app, flags

from experiments import launch, texts  # texts defines the flags, with IMDB's defaults

DEFAULTS = texts.DEFAULTS
flags.adopt_module_key_flags(launch)  # --help lists the experiment's flags

if __name__ == '__main__':
  app.run(launch.run)
