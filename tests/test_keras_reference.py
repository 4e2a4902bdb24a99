"""experiments/keras_reference.py: the seed's Keras models are the ones the docs compare with."""
import numpy as np

from experiments import keras_reference


def test_keras_reference_models_have_the_seeds_parameter_counts():
  assert keras_reference.seed_cnn().count_params() == 122_570           # the seed's CNN (and SimpleCNN)
  assert keras_reference.seed_lstm().count_params() == 166_305          # 10000 x 16 + LSTM 32 + Dense 1
  assert keras_reference.bilstm().count_params() == 2_659_073           # 20000 x 128 + 2 x LSTM 64 + Dense 1


def test_keras_reference_standardizes_texts_as_the_zoo_does():
  import tensorflow as tf
  from zoo.data import text
  texts = tf.constant(['Great<br />film, I LOVED it!', "Don't\tgo: it's dull...<br/>Really."])
  np.testing.assert_array_equal(keras_reference.standardize(texts).numpy(), text.standardize(texts).numpy())
