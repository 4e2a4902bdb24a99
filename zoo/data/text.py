"""Text classification data (IMDB reviews, AG News, Yelp, a folder of your own .txt files),
tokenized once by the seed's Keras rules (`tokenizer.py`, plain Python: no TensorFlow).

The seed's `Tokenizer(num_words=vocab_size, oov_token=...)` + `pad_sequences(maxlen=max_length,
padding='post', truncating='post')`: lower-cased, each of Keras' filter characters (ASCII punctuation
but the apostrophe, tab, newline) replaced by a space, split on spaces ("don't" is one word,
"well-made" two, `<br />` leaves "br"); the `--vocab_size` - 2 most frequent training words get ids
2.. (ties: first occurrence first), 0 pads and 1 is out of vocabulary; every text cut or padded at
its end to `--max_length` ids. The vocabulary is learned from `--train_split` only and kept in
`<workdir>/vocabulary.txt`, so eval and predict read the same ids the model was trained on.
A fine-tuning run (`tokenizer_from`: the source workdir) learns none: it reads texts with the
source's vocabulary and rules, so that each copied embedding row or n-gram bucket still belongs to
the word it was trained on, and keeps them in its own workdir like a learned one.
"""
import logging
import time
from pathlib import Path
from typing import Callable

import jax
import numpy as np

from zoo import workdir as workdir_lib
from zoo.data import tokenizer as tokenizer_lib
from zoo.data.pipeline import ArraySplit
from zoo.data.sources import DatasetInfo
from zoo.errors import ZooError

log = logging.getLogger('zoo')

RULES = 'keras'  # dataset.json's `inputs.tokenizer`: the Keras rules (`tokenizer.py`)
PREPROCESSING = ("lower-cased; each of !\"#$%&()*+,-./:;<=>?@[\\]^_`{|}~, tab and newline replaced by a space "
                 "(Keras' Tokenizer filters); split on spaces; word ids by training-split frequency (0 padding, "
                 "1 out of vocabulary), post-padded or truncated to max_length")


def decode(texts) -> list[str]:
  """UTF-8 bytes (TFDS's text features, a folder's files) -> str; an invalid byte becomes U+FFFD."""
  return [t.decode('utf-8', errors='replace') if isinstance(t, bytes) else str(t) for t in texts]


class TextDataset:
  """Texts and integer labels of one source (a TFDS text classification dataset by name, or a folder
  of .txt files), tokenized once. Two classes are one logit (sigmoid); more get one logit each.

  `read_split(split) -> {'text': bytes [N], 'label': int [N]}`."""
  kind = 'text'
  noise_per_example = 0  # no augmentation
  alternating_noise_columns = ()

  def __init__(self, info: DatasetInfo, read_split: Callable[[str], dict], *, vocab_size: int | None,
               max_length: int | None, train_split: str, workdir=None, source: str = 'tfds', tokenizer_from=None):
    if not vocab_size or vocab_size < 3 or not max_length or max_length < 1:
      raise ZooError(f'--vocab_size={vocab_size} or --max_length={max_length} is too small; pass '
                     '--vocab_size >= 3 (padding, OOV and at least one word) and --max_length >= 1')
    self.info, self.name, self.source = info, info.name, source
    self.class_names = list(info.class_names)
    self.vocab_size, self.max_length, self.train_split = vocab_size, max_length, train_split
    self.workdir = Path(workdir) if workdir is not None else None
    self.tokenizer_from = Path(tokenizer_from) if tokenizer_from is not None else None
    self._read_split = read_split
    self._tokenizer = None

  def model_kwargs(self) -> dict:
    return {'vocab_size': self.vocab_size, 'num_classes': 1 if len(self.class_names) == 2 else len(self.class_names)}

  def _given_vocabulary(self):
    """The workdir's own vocabulary, else that of `tokenizer_from`, else None (to be learned).

    In a multi-process run process 0 learns and writes it; the others wait for the file and read
    it, so every process tokenizes with the same words and no two write the same file. A
    fine-tune's processes all read the source's (process 0 writes it into the workdir later:
    `zoo.training.finetune.record`)."""
    if self.workdir is None:
      return None
    learning = self.tokenizer_from is None
    vocabulary = workdir_lib.read_vocabulary(self.workdir, wait=learning and jax.process_index() != 0)
    if vocabulary is not None or learning:
      return vocabulary
    vocabulary = workdir_lib.read_vocabulary(self.tokenizer_from)
    if vocabulary is None:
      raise ZooError(f'{self.tokenizer_from} has no {workdir_lib.VOCABULARY_FILE}: the words its model was '
                     'trained on are lost; fine-tune from another workdir, or drop --init_from')
    return vocabulary

  def tokenizer(self) -> tokenizer_lib.Tokenizer:
    """The workdir's vocabulary if it has one (or the fine-tuning source's), else learned from the
    training split (`_given_vocabulary`)."""
    if self._tokenizer is None:
      vocabulary = self._given_vocabulary()
      if vocabulary is None:
        start = time.perf_counter()
        vocabulary = tokenizer_lib.learn_vocabulary(decode(self.texts(self.train_split)), self.vocab_size)
        log.info('Learned a vocabulary of %d words from %s in %.1f s', len(vocabulary), self.train_split,
                 time.perf_counter() - start)
        if self.workdir is not None:
          workdir_lib.write_vocabulary(self.workdir, vocabulary)
      try:  # ids past --vocab_size would index beyond the embedding: a longer file is cut
        self._tokenizer = tokenizer_lib.Tokenizer(vocabulary[:self.vocab_size - 2], self.max_length)
      except ValueError as e:
        raise ZooError(f'{workdir_lib.vocabulary_path(self.workdir)} is not a vocabulary ({e}); restore the '
                       'file the model was trained with, or train in a new --workdir') from None
    return self._tokenizer

  def texts(self, split: str) -> np.ndarray:
    """The split's raw texts (UTF-8 bytes), in example order: what a report shows of a mistake."""
    return self._read_split(split)['text']

  def load(self, split: str) -> ArraySplit:
    arrays = self._read_split(split)
    return ArraySplit(inputs=self.tokenizer()(decode(arrays['text'])), labels=arrays['label'].astype(np.int32))

  def describe(self) -> dict:
    """What a trained model needs to be used without this code's data: kept in the workdir."""
    return {'dataset': self.name, 'source': self.source, 'class_names': self.class_names,
            'info': self.info.to_json(),
            'inputs': {'kind': 'text', 'vocabulary': workdir_lib.VOCABULARY_FILE, 'vocab_size': self.vocab_size,
                       'max_length': self.max_length, 'preprocessing': PREPROCESSING, 'tokenizer': RULES}}

  def encode(self, texts: list[str]) -> np.ndarray:
    """Raw texts -> model inputs, for predict."""
    return self.tokenizer()(texts)

  def preprocess(self, tokens, noise):
    return tokens

  def preprocess_on_device(self, tokens, noise):
    return tokens
