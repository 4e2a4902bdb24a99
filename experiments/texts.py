"""Text classification on any TFDS text dataset or a folder of your own .txt files.

  python -m experiments.texts --dataset=ag_news_subset          # any TFDS text classification dataset
  python -m experiments.texts --text_folder=DIR                 # DIR/<split>/<class>/<file>.txt

Classes and class names come from the dataset's TFDS metadata (or the folder's class subfolders);
two classes get one logit (sigmoid), more get a softmax. The defaults are the recipe with the best
accuracy per minute, the n-gram model (experiments/recipes/imdb_ngram.flags, with its command and
measured result); `--flagfile=experiments/recipes/imdb_bilstm.flags` trains the BiLSTM.
`--mode=predict --workdir=W --text="..."` classifies texts.
"""
from absl import app, flags

from experiments import launch

DEFAULTS = launch.read_recipe(launch.RECIPES / 'imdb_ngram.flags')

launch.define_flags(DEFAULTS)
flags.adopt_module_key_flags(launch)  # --help lists the experiment's flags

if __name__ == '__main__':
  app.run(launch.run)
