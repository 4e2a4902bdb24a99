"""IMDB reviews from TFDS, tokenized once with Keras `TextVectorization` (the seed's semantics).

The seed's `Tokenizer(num_words, oov_token)` + `pad_sequences(padding='post', truncating='post')`:
lowercase, punctuation (and IMDB's `<br />` markup) stripped, split on whitespace, the
`--vocab_size` most frequent training words kept (ids 0 = padding and 1 = out-of-vocabulary
included in that count), every review post-padded or truncated to `--max_length` ids.
The vocabulary is learned from `--train_split` only and kept in `<workdir>/vocabulary.txt`, so
eval and predict read the same ids the model was trained on.
"""
import os
import re
import string
import time
from pathlib import Path

import jax
import numpy as np

from zoo.data import sources, tensorflow_import
from zoo.data.pipeline import ArraySplit
from zoo.errors import ZooError
from zoo.training.config import Config

tf = tensorflow_import.tensorflow()  # the tokenizer is TensorFlow: imported with this module

VOCABULARY_FILE = 'vocabulary.txt'
_MARKUP = r'<br\s*/?>'
_PUNCTUATION = '[%s]' % re.escape(string.punctuation)


def standardize(texts: tf.Tensor) -> tf.Tensor:
  texts = tf.strings.lower(texts)
  texts = tf.strings.regex_replace(texts, _MARKUP, ' ')
  return tf.strings.regex_replace(texts, _PUNCTUATION, '')


def create_tokenizer(vocab_size: int, max_length: int, vocabulary=None):
  """A TextVectorization layer; `vocabulary` (words, most frequent first) or adapt() it later."""
  from keras.layers import TextVectorization
  return TextVectorization(max_tokens=vocab_size, standardize=standardize, split='whitespace',
                           output_mode='int', output_sequence_length=max_length, vocabulary=vocabulary)


def fit_tokenizer(texts, vocab_size: int, max_length: int):
  """Learns the vocabulary from `texts` (the training split only)."""
  tokenizer = create_tokenizer(vocab_size, max_length)
  tokenizer.adapt(tf.data.Dataset.from_tensor_slices(texts).batch(1024))
  return tokenizer


def words(tokenizer) -> list[str]:
  """The learned words, most frequent first, without the padding and OOV entries."""
  return [str(w) for w in tokenizer.get_vocabulary()[2:]]


def tokenize(tokenizer, texts) -> np.ndarray:
  """Token ids, int32 [len(texts), max_length], computed in parallel by tf.data."""
  if len(texts) == 0:
    return np.zeros((0, tokenizer._output_sequence_length), np.int32)
  dataset = tf.data.Dataset.from_tensor_slices(np.asarray(texts, dtype=object)).batch(1024)
  dataset = dataset.map(tokenizer, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  return np.concatenate([b.astype(np.int32) for b in dataset.as_numpy_iterator()])


VOCABULARY_WAIT_SECONDS = 600  # learning a vocabulary of IMDB's 25,000 reviews takes ~10 s


def _wait_for(path: Path, timeout: float = VOCABULARY_WAIT_SECONDS) -> None:
  deadline = time.monotonic() + timeout
  while not path.exists():
    if time.monotonic() > deadline:
      raise ZooError(f'process {jax.process_index()} waited {timeout:.0f} s for process 0 to write {path}; '
                     'every process needs the same --workdir on a shared file system')
    time.sleep(0.2)


class ImdbReviews:
  name = 'imdb_reviews'
  noise_per_example = 0  # no augmentation
  alternating_noise_columns = ()

  def __init__(self, config: Config, data_dir: str | None, workdir=None):
    if not config.vocab_size or config.vocab_size < 3 or not config.max_length or config.max_length < 1:
      raise ZooError(f'--vocab_size={config.vocab_size} or --max_length={config.max_length} is too small; pass '
                     '--vocab_size >= 3 (padding, OOV and at least one word) and --max_length >= 1')
    self.config = config
    self.data_dir = data_dir
    self.workdir = Path(workdir) if workdir is not None else None
    self._tokenizer = None

  def model_kwargs(self) -> dict:
    return {'vocab_size': self.config.vocab_size, 'num_classes': 1}

  def tokenizer(self):
    """The workdir's vocabulary if it has one, else learned from the training split.

    In a multi-process run process 0 learns and writes it; the others wait for the file and read
    it, so every process tokenizes with the same words and no two write the same file."""
    if self._tokenizer is None:
      path = self.workdir / VOCABULARY_FILE if self.workdir else None
      if path and not path.exists() and jax.process_index() != 0:
        _wait_for(path)
      if path and path.exists():
        vocabulary = path.read_text(encoding='utf-8').split('\n')
        self._tokenizer = create_tokenizer(self.config.vocab_size, self.config.max_length, vocabulary)
      else:
        texts = self._texts(self.config.train_split)
        self._tokenizer = fit_tokenizer(texts, self.config.vocab_size, self.config.max_length)
        if path:
          path.parent.mkdir(parents=True, exist_ok=True)
          tmp = path.with_name(f'{path.name}.{os.getpid()}.tmp')
          tmp.write_text('\n'.join(words(self._tokenizer)), encoding='utf-8')
          tmp.replace(path)  # atomic: a reader sees no file or the whole file
    return self._tokenizer

  def _texts(self, split: str) -> np.ndarray:
    return sources.load_split(self.name, split, self.data_dir, self.config.split_cache)['text']

  def load(self, split: str) -> ArraySplit:
    arrays = sources.load_split(self.name, split, self.data_dir, self.config.split_cache)
    return ArraySplit(inputs=tokenize(self.tokenizer(), arrays['text']), labels=arrays['label'].astype(np.int32))

  def describe(self) -> dict:
    """What a trained model needs to be used without this code's data: kept in the workdir."""
    return {'dataset': self.name, 'class_names': sources.class_names(self.name, self.data_dir),
            'inputs': {'kind': 'text', 'vocabulary': VOCABULARY_FILE, 'vocab_size': self.config.vocab_size,
                       'max_length': self.config.max_length,
                       'preprocessing': 'lowercased; <br /> markup and punctuation removed; split on '
                                        'whitespace; word ids (0 padding, 1 out of vocabulary) post-padded '
                                        'or truncated to max_length'}}

  def encode(self, texts: list[str]) -> np.ndarray:
    """Raw texts -> model inputs, for predict."""
    return tokenize(self.tokenizer(), [t.encode('utf-8') for t in texts])

  def preprocess(self, tokens: tf.Tensor, noise) -> tf.Tensor:
    return tokens

  def preprocess_on_device(self, tokens, noise):
    return tokens
