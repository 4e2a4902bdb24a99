"""lab/keras_reference.py: the seed's Keras models are the ones the docs compare with."""
import numpy as np

from lab import keras_reference


def test_keras_reference_models_have_the_seeds_parameter_counts():
  assert keras_reference.seed_cnn().count_params() == 122_570           # the seed's CNN (and SimpleCNN)
  assert keras_reference.seed_lstm().count_params() == 166_305          # 10000 x 16 + LSTM 32 + Dense 1
  assert keras_reference.bilstm().count_params() == 2_659_073           # 20000 x 128 + 2 x LSTM 64 + Dense 1


def test_keras_reference_tokenizes_by_the_keras_rules():
  train = np.array([b"Don't stop: a well-made film.<br />Really!", b'A film. A FILM, again.'], dtype=object)
  x_train, x_eval = keras_reference.tokenize(train, np.array([b'A new film'], dtype=object), 6, 4)
  # a and film 3 times, then don't, stop, well, ... once each (first occurrence first): 2 a, 3 film,
  # 4 don't, 5 stop; vocabulary 6 keeps those four; 1 is out of vocabulary, 0 pads
  np.testing.assert_array_equal(x_train, [[4, 5, 2, 1], [2, 3, 2, 3]])
  np.testing.assert_array_equal(x_eval, [[2, 1, 3, 0]])
