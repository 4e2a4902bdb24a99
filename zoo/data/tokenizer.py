"""The seed's Keras text preprocessing in plain Python: `Tokenizer(num_words, oov_token)` followed by
`pad_sequences(padding='post', truncating='post')`, rule for rule, without TensorFlow or Keras.

Keras' rules (`text_to_word_sequence` and `Tokenizer` of keras.preprocessing.text, kept in Keras 3
as its legacy preprocessing):
- lower-case with Python's `str.lower` (Unicode: "École" -> "école");
- replace each character of `FILTERS` (ASCII punctuation except the apostrophe, plus tab and
  newline) with a space, split on the space and drop the empty strings: "don't" stays one word,
  "well-made" becomes "well" and "made", "<br />" leaves the word "br"; other whitespace (a
  carriage return, a no-break space) stays inside its word;
- word ids by descending count over the training texts, ties in order of first occurrence (Keras
  sorts its insertion-ordered counts stably): 0 is padding, 1 out of vocabulary, the `vocab_size - 2`
  most frequent words are 2..vocab_size - 1 (`vocab_size` is Keras' `num_words`);
- each text's ids cut after `max_length` and padded with 0 at the end.

Plain Python is as fast here as the TensorFlow ops that would do the same (docs/text.md) and keeps
the text models' preprocessing importable without TensorFlow.
"""
import collections
import re
from typing import Iterable, Sequence

import numpy as np

FILTERS = '!"#$%&()*+,-./:;<=>?@[\\]^_`{|}~\t\n'  # Keras' default `filters`
PADDING, OUT_OF_VOCABULARY = 0, 1  # the ids before the first word's
_TO_SPACE = str.maketrans(dict.fromkeys(FILTERS, ' '))
_WHITESPACE_BUT_SPACE = re.compile(r'[^\S ]')


def split_words(text: str) -> list[str]:
  """Keras' `text_to_word_sequence(text)`: lower-cased words between filter characters and spaces."""
  text = text.lower().translate(_TO_SPACE)
  if text.isascii() and not _WHITESPACE_BUT_SPACE.search(text):
    return text.split()  # the same words when the space is the only whitespace left, and faster
  return [word for word in text.split(' ') if word]


def learn_vocabulary(texts: Iterable[str], vocab_size: int | None = None) -> list[str]:
  """The words of `texts`, most frequent first (ties: first occurrence first), the first
  `vocab_size - 2` of them (all without `vocab_size`): Keras' `word_index` order."""
  counts = collections.Counter()  # insertion-ordered, so ties keep their first occurrence's order
  for text in texts:
    counts.update(split_words(text))
  return [word for word, _ in counts.most_common(None if vocab_size is None else max(vocab_size - 2, 0))]


class Tokenizer:
  """Texts -> int32 ids [N, max_length] over a fixed vocabulary (words, most frequent first)."""

  def __init__(self, vocabulary: Sequence[str], max_length: int):
    self.vocabulary, self.max_length = list(vocabulary), max_length
    first = OUT_OF_VOCABULARY + 1
    self._ids = {word: first + i for i, word in enumerate(self.vocabulary)}
    if len(self._ids) != len(self.vocabulary):
      repeated = [w for w, n in collections.Counter(self.vocabulary).items() if n > 1][:3]
      raise ValueError(f'the vocabulary repeats {repeated}')

  def __call__(self, texts: Iterable[str]) -> np.ndarray:
    texts = list(texts)
    ids = np.zeros((len(texts), self.max_length), np.int32)  # PADDING after each text's words
    lookup = self._ids.get
    for row, text in zip(ids, texts):
      words = split_words(text)[:self.max_length]  # every word gets an id (OOV included): cut first
      row[:len(words)] = [lookup(word, OUT_OF_VOCABULARY) for word in words]
    return ids
