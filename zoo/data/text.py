"""Text classification data (IMDB reviews, AG News, Yelp, a folder of your own .txt files),
tokenized once with Keras `TextVectorization` (the seed's semantics).

The seed's `Tokenizer(num_words, oov_token)` + `pad_sequences(padding='post', truncating='post')`:
lowercase, punctuation (and IMDB's `<br />` markup) stripped, split on whitespace, the
`--vocab_size` most frequent training words kept (ids 0 = padding and 1 = out-of-vocabulary
included in that count), every review post-padded or truncated to `--max_length` ids.
The vocabulary is learned from `--train_split` only and kept in `<workdir>/vocabulary.txt`, so
eval and predict read the same ids the model was trained on.
"""
import re
import string
from pathlib import Path
from typing import Callable

import jax
import numpy as np

from zoo.data import tensorflow_import
from zoo.data.pipeline import ArraySplit
from zoo.data.sources import DatasetInfo
from zoo import workdir as workdir_lib
from zoo.errors import ZooError

tf = tensorflow_import.tensorflow()  # the tokenizer is TensorFlow: imported with this module

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


_BATCH = 1024


def tokenize(tokenizer, texts) -> np.ndarray:
  """Token ids, int32 [len(texts), max_length]; more than one batch of texts (a split) in parallel by tf.data."""
  if len(texts) == 0:
    return np.zeros((0, tokenizer._output_sequence_length), np.int32)
  if len(texts) <= _BATCH:  # one batch (a prediction): the layer called directly, without building and
    # tracing a tf.data pipeline, is the same ops and ~15x faster (20 ms against 350 ms for one text)
    return np.asarray(tokenizer(tf.constant(np.asarray(texts, dtype=object)))).astype(np.int32)
  dataset = tf.data.Dataset.from_tensor_slices(np.asarray(texts, dtype=object)).batch(_BATCH)
  dataset = dataset.map(tokenizer, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  return np.concatenate([b.astype(np.int32) for b in dataset.as_numpy_iterator()])


class TextDataset:
  """Texts and integer labels of one source (a TFDS text classification dataset by name, or a folder
  of .txt files), tokenized once. Two classes are one logit (sigmoid); more get one logit each.

  `read_split(split) -> {'text': bytes [N], 'label': int [N]}`."""
  kind = 'text'
  noise_per_example = 0  # no augmentation
  alternating_noise_columns = ()

  def __init__(self, info: DatasetInfo, read_split: Callable[[str], dict], *, vocab_size: int | None,
               max_length: int | None, train_split: str, workdir=None, source: str = 'tfds'):
    if not vocab_size or vocab_size < 3 or not max_length or max_length < 1:
      raise ZooError(f'--vocab_size={vocab_size} or --max_length={max_length} is too small; pass '
                     '--vocab_size >= 3 (padding, OOV and at least one word) and --max_length >= 1')
    self.info, self.name, self.source = info, info.name, source
    self.class_names = list(info.class_names)
    self.vocab_size, self.max_length, self.train_split = vocab_size, max_length, train_split
    self.workdir = Path(workdir) if workdir is not None else None
    self._read_split = read_split
    self._tokenizer = None

  def model_kwargs(self) -> dict:
    return {'vocab_size': self.vocab_size, 'num_classes': 1 if len(self.class_names) == 2 else len(self.class_names)}

  def tokenizer(self):
    """The workdir's vocabulary if it has one, else learned from the training split.

    In a multi-process run process 0 learns and writes it; the others wait for the file and read
    it, so every process tokenizes with the same words and no two write the same file."""
    if self._tokenizer is None:
      vocabulary = None
      if self.workdir is not None:
        vocabulary = workdir_lib.read_vocabulary(self.workdir, wait=jax.process_index() != 0)
      if vocabulary is not None:
        self._tokenizer = create_tokenizer(self.vocab_size, self.max_length, vocabulary)
      else:
        self._tokenizer = fit_tokenizer(self.texts(self.train_split), self.vocab_size, self.max_length)
        if self.workdir is not None:
          workdir_lib.write_vocabulary(self.workdir, words(self._tokenizer))
    return self._tokenizer

  def texts(self, split: str) -> np.ndarray:
    """The split's raw texts (UTF-8 bytes), in example order: what a report shows of a mistake."""
    return self._read_split(split)['text']

  def load(self, split: str) -> ArraySplit:
    arrays = self._read_split(split)
    return ArraySplit(inputs=tokenize(self.tokenizer(), arrays['text']), labels=arrays['label'].astype(np.int32))

  def describe(self) -> dict:
    """What a trained model needs to be used without this code's data: kept in the workdir."""
    return {'dataset': self.name, 'source': self.source, 'class_names': self.class_names,
            'info': self.info.to_json(),
            'inputs': {'kind': 'text', 'vocabulary': workdir_lib.VOCABULARY_FILE, 'vocab_size': self.vocab_size,
                       'max_length': self.max_length,
                       'preprocessing': 'lowercased; <br /> markup and punctuation removed; split on '
                                        'whitespace; word ids (0 padding, 1 out of vocabulary) post-padded '
                                        'or truncated to max_length'}}

  def encode(self, texts: list[str]) -> np.ndarray:
    """Raw texts -> model inputs, for predict."""
    return tokenize(self.tokenizer(), [t.encode('utf-8') for t in texts])

  def preprocess(self, tokens, noise):
    return tokens

  def preprocess_on_device(self, tokens, noise):
    return tokens
