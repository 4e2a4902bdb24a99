"""The seed's Keras models on the same TFDS data: the reference the zoo's figures are compared with.

  python -m lab.keras_reference --model=cnn --data_dir=DIR --epochs=10 \\
    --train_split='train[:45000]' --eval_split='train[45000:]'
  python -m lab.keras_reference --model=lstm --data_dir=DIR \\
    --train_split='train[:22500]' --eval_split='train[22500:]'

Models (each with its recipe's optimizer, batch and epochs unless flags say otherwise):
  cnn     the seed's CIFAR-10 CNN as the seed writes it: Conv 32 -> MaxPool -> Conv 64 -> MaxPool ->
          Conv 64 -> Dense 64 -> Dense 10 (122,570 parameters), images / 255, Adam 1e-3,
          from-logits cross-entropy, batch 32, 10 epochs. The zoo's experiments/recipes/cifar_seed.flags.
  lstm    the seed's IMDB classifier: Embedding(10000, 16) -> LSTM(32) -> Dense(1, sigmoid), Adam 1e-3,
          batch 32, 200 tokens, 5 epochs. As in the seed, the LSTM also reads the padding after a review
          (the zoo stops at the last token). The zoo's experiments/recipes/imdb_seed.flags.
  bilstm  the zoo's default IMDB network layer for layer: Embedding(20000, 128) -> Dropout 0.4 ->
          BiLSTM(64 + 64, all steps) -> masked mean + max pooling -> Dropout 0.4 -> Dense(1, sigmoid),
          AdamW 3e-3 (weight decay 1e-4) with 0.2 epochs of warm-up and cosine decay, batch 64,
          400 tokens, 2 epochs. The zoo's experiments/recipes/imdb_bilstm.flags.

Only the data loading differs from the seed (keras.datasets downloads): the same arrays come from
tfds.load(..., batch_size=-1). Texts are tokenized by the zoo's tokenizer (zoo/data/tokenizer.py),
which follows the seed's Keras `Tokenizer` + `pad_sequences(padding='post', truncating='post')` rule
for rule: the vocabulary (padding and out-of-vocabulary ids included) learned from --train_split.
Prints one JSON line per epoch and a summary line whose `eval_accuracy` is the last epoch's.
Needs TensorFlow, Keras and tensorflow-datasets (all installed with the zoo).
"""
import json
import os
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

from absl import app, flags

flags.DEFINE_enum('model', 'cnn', ['cnn', 'lstm', 'bilstm'], 'Which Keras reference to train.')
flags.DEFINE_string('data_dir', None, 'TFDS data directory (default: $TFDS_DATA_DIR or ~/tensorflow_datasets; '
                    'without --data_dir the dataset is downloaded if missing).')
flags.DEFINE_integer('epochs', None, 'Epochs (default: the recipe\'s: cnn 10, lstm 5, bilstm 2).')
flags.DEFINE_integer('batch_size', None, 'Batch size (default: the recipe\'s: cnn 32, lstm 32, bilstm 64).')
flags.DEFINE_string('train_split', 'train', 'TFDS split to train on (slicing works: "train[:45000]").')
flags.DEFINE_string('eval_split', 'test', 'TFDS split to evaluate on after every epoch.')
flags.DEFINE_integer('seed', 0, 'keras.utils.set_random_seed.')
FLAGS = flags.FLAGS

# name -> dataset, epochs, batch, and for text: vocabulary size and tokens per review
RECIPES = {
    'cnn': dict(dataset='cifar10', epochs=10, batch_size=32),
    'lstm': dict(dataset='imdb_reviews', epochs=5, batch_size=32, vocab_size=10000, max_length=200),
    'bilstm': dict(dataset='imdb_reviews', epochs=2, batch_size=64, vocab_size=20000, max_length=400),
}


def seed_cnn():
  """The seed's CIFAR-10 CNN, layer for layer."""
  from keras import layers, models
  return models.Sequential([
      layers.Input((32, 32, 3)),
      layers.Conv2D(32, (3, 3), activation='relu'), layers.MaxPooling2D((2, 2)),
      layers.Conv2D(64, (3, 3), activation='relu'), layers.MaxPooling2D((2, 2)),
      layers.Conv2D(64, (3, 3), activation='relu'), layers.Flatten(),
      layers.Dense(64, activation='relu'), layers.Dense(10)])


def seed_lstm(vocab_size=10000, max_length=200):
  """The seed's text classifier: Embedding 16 -> LSTM 32 -> Dense(1, sigmoid)."""
  from keras import layers, models
  return models.Sequential([layers.Input((max_length,), dtype='int64'), layers.Embedding(vocab_size, 16),
                            layers.LSTM(32), layers.Dense(1, activation='sigmoid')])


def bilstm(vocab_size=20000, max_length=400):
  """The zoo's BiLSTMClassifier in Keras: padding masked in the LSTMs and in both pools."""
  import keras
  from keras import layers, ops
  tokens = keras.Input((max_length,), dtype='int64')
  x = layers.Embedding(vocab_size, 128, mask_zero=True)(tokens)
  x = layers.Dropout(0.4)(x)
  y = layers.Bidirectional(layers.LSTM(64, return_sequences=True))(x)
  mask = ops.expand_dims(ops.cast(ops.not_equal(tokens, 0), 'float32'), -1)
  mean = ops.sum(y * mask, 1) / ops.maximum(ops.sum(mask, 1), 1.0)
  maximum = ops.max(y + (mask - 1.0) * 1e9, 1)
  z = layers.Dropout(0.4)(layers.Concatenate()([mean, maximum]))
  return keras.Model(tokens, layers.Dense(1, activation='sigmoid')(z))


def load(dataset, split, data_dir):
  """A whole TFDS split as NumPy arrays (inputs, labels)."""
  import tensorflow_datasets as tfds
  return tfds.as_numpy(tfds.load(dataset, split=split, data_dir=data_dir, batch_size=-1,
                                 as_supervised=True, download=data_dir is None))


def tokenize(train_texts, eval_texts, vocab_size, max_length):
  """Both splits' ids, with the vocabulary of the training texts (UTF-8 bytes, as TFDS gives them)."""
  from zoo.data import text, tokenizer
  train_texts, eval_texts = text.decode(train_texts), text.decode(eval_texts)
  vectorize = tokenizer.Tokenizer(tokenizer.learn_vocabulary(train_texts, vocab_size), max_length)
  return vectorize(train_texts), vectorize(eval_texts)


def build(name, recipe, epochs, steps_per_epoch):
  """The model and its compiled optimizer and loss, as the recipe has them."""
  import keras
  if name == 'cnn':
    model = seed_cnn()
    model.compile(optimizer='adam', loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=['accuracy'])
    return model
  if name == 'lstm':
    model, optimizer = seed_lstm(recipe['vocab_size'], recipe['max_length']), keras.optimizers.Adam(1e-3)
  else:
    model = bilstm(recipe['vocab_size'], recipe['max_length'])
    steps, warmup = epochs * steps_per_epoch, int(0.2 * steps_per_epoch)
    schedule = keras.optimizers.schedules.CosineDecay(0.0, steps - warmup, warmup_target=3e-3,
                                                      warmup_steps=warmup)
    optimizer = keras.optimizers.AdamW(schedule, weight_decay=1e-4)
  model.compile(optimizer=optimizer, loss='binary_crossentropy', metrics=['accuracy'])
  return model


def main(argv):
  del argv
  start = time.perf_counter()
  import keras
  recipe = RECIPES[FLAGS.model]
  epochs = FLAGS.epochs or recipe['epochs']
  batch_size = FLAGS.batch_size or recipe['batch_size']
  (x_train, y_train), (x_eval, y_eval) = (load(recipe['dataset'], split, FLAGS.data_dir)
                                          for split in (FLAGS.train_split, FLAGS.eval_split))
  if recipe['dataset'] == 'cifar10':
    x_train, x_eval = x_train / 255.0, x_eval / 255.0  # as the seed does
  else:
    x_train, x_eval = tokenize(x_train, x_eval, recipe['vocab_size'], recipe['max_length'])
  keras.utils.set_random_seed(FLAGS.seed)
  model = build(FLAGS.model, recipe, epochs, len(x_train) // batch_size)

  class EpochLine(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
      self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
      print(json.dumps({'epoch': epoch + 1, 'seconds': round(time.perf_counter() - self.start, 2),
                        **{k: round(float(v), 4) for k, v in (logs or {}).items()}}), flush=True)

  fit_start = time.perf_counter()
  history = model.fit(x_train, y_train, epochs=epochs, batch_size=batch_size, verbose=0,
                      validation_data=(x_eval, y_eval), callbacks=[EpochLine()])
  train_seconds = time.perf_counter() - fit_start
  print(json.dumps({
      'summary': 'keras_reference', 'model': FLAGS.model, 'parameters': model.count_params(),
      'epochs': epochs, 'batch_size': batch_size, 'train_split': FLAGS.train_split,
      'eval_split': FLAGS.eval_split, 'examples_per_second': round(len(x_train) * epochs / train_seconds),
      'train_seconds': round(train_seconds, 1), 'total_seconds': round(time.perf_counter() - start, 1),
      'eval_accuracy': round(float(history.history['val_accuracy'][-1]), 4)}), flush=True)


if __name__ == '__main__':
  app.run(main)
