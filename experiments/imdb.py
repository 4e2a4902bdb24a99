"""IMDB sentiment with LSTMs: `python -m experiments.imdb [--flagfile=experiments/recipes/imdb_seed.flags]`.

`experiments.texts` with IMDB's defaults (the bidirectional LSTM recipe; see
experiments/recipes/imdb_bilstm.flags for its command and measured result).
`--mode=predict --workdir=W --text="..."` prints {"text": ..., "label": ..., "p_positive": ..., "top": ...} per text.
"""
from absl import app, flags

from experiments import launch, texts  # texts defines the flags, with IMDB's defaults

DEFAULTS = texts.DEFAULTS
flags.adopt_module_key_flags(launch)  # --help lists the experiment's flags

if __name__ == '__main__':
  app.run(launch.run)
