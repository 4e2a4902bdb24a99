"""TensorFlow, imported only by the code that needs it (tf.data, TFDS's
tf.data reader), and never given the GPUs/TPUs: JAX needs their memory."""
import functools


@functools.cache
def tensorflow():
  import tensorflow as tf
  try:
    tf.config.set_visible_devices([], 'GPU')
    tf.config.set_visible_devices([], 'TPU')
  except (RuntimeError, ValueError):
    pass  # devices already initialised, or no such device type: nothing to hide
  return tf
