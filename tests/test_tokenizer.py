"""zoo/data/tokenizer.py: the seed's Keras `Tokenizer` + `pad_sequences(padding='post',
truncating='post')`. Every expected token below is worked out by hand from Keras' rules: lower-case
(str.lower), each filter character replaced by a space, split on the space, empties dropped."""

import numpy as np
import pytest

from conftest import in_ci, real_data_dir

from zoo.data import tokenizer
from zoo.data.tokenizer import Tokenizer, learn_vocabulary, split_words


@pytest.mark.parametrize('text, words', [
    ("Don't stop: it's a WELL-made film!", ["don't", 'stop', "it's", 'a', 'well', 'made', 'film']),
    ("'Quoted' words", ["'quoted'", 'words']),                         # apostrophes are no filter
    ('Great<br /><br />Really.', ['great', 'br', 'br', 'really']),     # < / > go, "br" stays
    ('10/10, 7.5 stars in 2008 (#1)', ['10', '10', '7', '5', 'stars', 'in', '2008', '1']),
    ('École ÇA Straße ΣΟΦΟΣ naïve café’s', ['école', 'ça', 'straße', 'σοφος', 'naïve', 'café’s']),
    ('one\ttwo\nthree  four', ['one', 'two', 'three', 'four']),       # tab and newline are filters
    ('a\rb c\xa0d e\x85f', ['a\rb', 'c\xa0d', 'e\x85f']),              # other whitespace is not
    (tokenizer.FILTERS + ' ', []),
    ('', []),
])
def test_split_words_follows_the_keras_rules(text, words):
  assert split_words(text) == words


def test_vocabulary_is_most_frequent_first_with_ties_in_first_occurrence_order():
  texts = ['b a c', 'c a d', 'd']  # b 1, a 2, c 2, d 2; first seen: b, a, c, d
  assert learn_vocabulary(texts) == ['a', 'c', 'd', 'b']
  assert learn_vocabulary(texts, vocab_size=4) == ['a', 'c']  # padding and OOV count in vocab_size
  assert learn_vocabulary(texts, vocab_size=2) == []
  assert learn_vocabulary(["It's it's ITS its"]) == ["it's", 'its']


def test_ids_are_words_then_oov_cut_and_padded_at_the_end():
  vectorize = Tokenizer(['a', 'c', 'd'], max_length=4)  # a 2, c 3, d 4, anything else 1
  ids = vectorize(['a b c d a', 'D', '', 'a-a', 'zzz!'])
  assert ids.dtype == np.int32
  np.testing.assert_array_equal(ids, [[2, 1, 3, 4],       # the fifth word is cut, b is OOV
                                      [4, 0, 0, 0],       # padding after the words
                                      [0, 0, 0, 0],
                                      [2, 2, 0, 0],
                                      [1, 0, 0, 0]])
  assert vectorize([]).shape == (0, 4)


def test_num_words_keeps_the_vocab_size_minus_two_most_frequent():
  corpus = ['a a a a b b b c c d'] * 3
  vectorize = Tokenizer(learn_vocabulary(corpus, vocab_size=4), max_length=5)
  assert vectorize.vocabulary == ['a', 'b']
  np.testing.assert_array_equal(vectorize(['d c b a']), [[1, 1, 3, 2, 0]])


def test_repeated_vocabulary_words_are_refused():
  with pytest.raises(ValueError, match='repeats'):
    Tokenizer(['a', 'b', 'a'], max_length=3)


def test_same_ids_as_keras_legacy_tokenizer_on_real_imdb_reviews():
  try:
    from keras.src.legacy.preprocessing.text import Tokenizer as KerasTokenizer
    from keras.utils import pad_sequences
  except ImportError:
    if in_ci():  # CI installs the pinned Keras, which has it: losing the reference is a failure there
      pytest.fail('this Keras has no legacy Tokenizer to compare with; pin a Keras that has it')
    pytest.skip("this Keras has no legacy Tokenizer")
  from zoo.data import sources, text
  texts = text.decode(sources.load_split('imdb_reviews', 'train[:600]', real_data_dir('imdb_reviews'))['text'])
  train, held_out = texts[:400], texts[400:]
  assert any(not t.isascii() for t in train) and any('<br />' in t for t in train)  # the cases that matter
  keras_tokenizer = KerasTokenizer(num_words=2000, oov_token='<OOV>')
  keras_tokenizer.fit_on_texts(train)
  keras_words = sorted(keras_tokenizer.word_index, key=keras_tokenizer.word_index.get)
  assert learn_vocabulary(train) == keras_words[1:]  # every word in Keras' order (it puts <OOV> first)
  vectorize = Tokenizer(learn_vocabulary(train, vocab_size=2000), max_length=150)
  for part in (train, held_out):
    expected = pad_sequences(keras_tokenizer.texts_to_sequences(part), maxlen=150, padding='post',
                             truncating='post')
    np.testing.assert_array_equal(vectorize(part), expected)
