"""IMDB sentiment with LSTMs: `python -m experiments.imdb [--flagfile=experiments/recipes/imdb_seed.flags]`.

Defaults are the strong recipe (bidirectional LSTM with pooling; see experiments/recipes/
imdb_bilstm.flags for its command and measured result). `--mode=predict --workdir=W --text="..."`
prints {"text": ..., "p_positive": ...} per text.
"""
from absl import app, flags

from experiments import launch
from zoo.training.config import Config

launch.define_flags(Config(dataset='imdb_reviews', model='bilstm', epochs=3, batch_size=64,
                           eval_batch_size=500, optimizer='adamw', learning_rate=3e-3,
                           schedule='warmup_cosine', warmup_epochs=0.2, weight_decay=1e-4,
                           vocab_size=20000, max_length=400, log_every_steps=50))
flags.adopt_module_key_flags(launch)  # --help lists the experiment's flags

if __name__ == '__main__':
  app.run(launch.run)
