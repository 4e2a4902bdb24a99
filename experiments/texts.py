"""Text classification on any TFDS text dataset or a folder of your own .txt files.

  python -m experiments.texts --dataset=ag_news_subset          # any TFDS text classification dataset
  python -m experiments.texts --text_folder=DIR                 # DIR/<split>/<class>/<file>.txt

Classes and class names come from the dataset's TFDS metadata (or the folder's class subfolders);
two classes get one logit (sigmoid), more get a softmax. Defaults are the IMDB BiLSTM recipe
(experiments/recipes/imdb_bilstm.flags, with its command and measured result).
`--mode=predict --workdir=W --text="..."` classifies texts.
"""
from absl import app, flags

from experiments import launch
from zoo.config import Config

DEFAULTS = Config(dataset='imdb_reviews', model='bilstm', epochs=3, batch_size=64, eval_batch_size=500,
                  optimizer='adamw', learning_rate=3e-3, schedule='warmup_cosine', warmup_epochs=0.2,
                  weight_decay=1e-4, vocab_size=20000, max_length=400, log_every_steps=50)

launch.define_flags(DEFAULTS)
flags.adopt_module_key_flags(launch)  # --help lists the experiment's flags

if __name__ == '__main__':
  app.run(launch.run)
