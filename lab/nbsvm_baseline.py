"""The linear baseline the n-gram model is compared with: scikit-learn's NBSVM-LR (Wang & Manning
2012 as a logistic regression), on the same cross-validation folds as `lab.ngram_sweep`.

A lab measurement, not part of the zoo: scikit-learn is a test dependency (not the package's),
imported only when a sweep asks for a baseline variant. The words are the zoo's (`zoo.data.tokenizer.split_words`, the
Keras rules, no length cut), so the comparison is between the models, not the tokenizers. Features
are the binary bag of 1- to `max_n`-grams in at least `min_documents` reviews of the training fold
(an exact vocabulary, no hashing),
each scaled by its Naive Bayes log-count ratio (smoothing `alpha`), then an L2-regularised logistic
regression (liblinear, dual, inverse strength `C`). With `beta` < 1 the weights are NBSVM's
interpolation `(1 - beta) * mean|w| + beta * w` (Wang & Manning's 0.25 was for their SVM).
"""
import numpy as np

from zoo.data import tokenizer

BASELINE_FIELDS = {'max_n': 2, 'C': 0.1, 'alpha': 1.0, 'beta': 1.0, 'min_documents': 1}


def vectorize(texts: list[str], max_n: int):
  """Binary bag of 1..max_n-grams of every text, columns over the n-grams of all of them (each
  fold then keeps the columns its training rows contain: an exact per-fold vocabulary)."""
  from sklearn.feature_extraction.text import CountVectorizer
  vectorizer = CountVectorizer(tokenizer=tokenizer.split_words, lowercase=False, token_pattern=None,
                               ngram_range=(1, max_n), binary=True, dtype=np.float32)
  return vectorizer.fit_transform(texts).tocsr()


def fold_probabilities(bag, labels: np.ndarray, train_rows: np.ndarray, eval_rows: np.ndarray, *, C: float,
                       alpha: float, beta: float, min_documents: int) -> np.ndarray:
  """NBSVM-LR trained on `train_rows` of `bag` ([N, features], binary): P(label 1) of `eval_rows`."""
  from sklearn.linear_model import LogisticRegression
  train, train_labels = bag[train_rows], labels[train_rows]
  columns = np.flatnonzero(np.asarray(train.sum(0)).ravel() >= max(min_documents, 1))  # the fold's own vocabulary
  train, evaluation = train[:, columns], bag[eval_rows][:, columns]
  positive = alpha + np.asarray(train[train_labels == 1].sum(0)).ravel()
  negative = alpha + np.asarray(train[train_labels == 0].sum(0)).ravel()
  ratios = np.log(positive / positive.sum()) - np.log(negative / negative.sum())
  classifier = LogisticRegression(C=C, solver='liblinear', dual=True, max_iter=1000)
  classifier.fit(train.multiply(ratios).tocsr(), train_labels)
  weights = classifier.coef_.ravel()
  weights = (1 - beta) * np.abs(weights).mean() + beta * weights
  scores = evaluation.multiply(ratios).tocsr() @ weights + classifier.intercept_[0]
  return 1 / (1 + np.exp(-scores))
