"""A bag of hashed word n-grams weighted by Naive Bayes log-count ratios, with a trainable linear
layer on top (NBSVM, Wang & Manning 2012, trained as a logistic regression).

Inputs are the token ids every text dataset produces ([N, max_length], 0 = padding). Inside the
module every n-gram of ids up to `max_n` (uni- and bigrams by default, trigrams too with 3) is
hashed into one of `num_buckets` buckets, so no n-gram vocabulary is stored: the word vocabulary
(`vocabulary.txt`), the hash below and the `owners` table define every feature. Each bucket belongs
to one n-gram (`min_documents`, default 2): the one in the most training reviews, if in at least 2,
told apart from the others hashed there by an 11-bit fingerprint; the others are no features. So the
n-grams of a single review, most of a split's, neither share weights with useful ones nor add a
trained bucket's weight to a new review as noise (docs/text.md). A review's features are the set of
owned buckets it contains (presence, not counts: repeating a phrase does not make it count more).
For class c

    logit_c = scale * sum over present buckets b of (1 + weights[b, c]) * ratios[b, c] + bias_c

`ratios` start as the Naive Bayes log-count ratios of the training split (class c against the
rest), set once by `init_from_data`; `weights` start at 0, so the untrained model is the NB
classifier (with `bias` the log prior ratio) and training corrects it. Both are trained: the ratios
are the per-bucket weights of a logistic regression started at NB, and `weights` rescale each one
(training the ratios too gave +0.36 points on two IMDB validation slices, docs/text.md). Two classes are one
logit (sigmoid), as for the other text models; more get one-vs-rest ratios and a softmax.
"""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from zoo.models.contract import setting
from zoo.models.registry import register

PAD_ID = 0
# One 32-bit offset per n-gram order, so that a bigram and a unigram land in unrelated buckets.
_ORDER_OFFSETS = (0x27D4EB2F, 0x165667B1, 0xD3A2646C)
_FINGERPRINT_SALT = 0x9E3779B9  # re-mixed for the fingerprint, which must not follow from the bucket
# float16 holds the integers up to 2**11 exactly, so a model packed as float16 keeps its owner table;
# a bucket's non-owners then match its owner's fingerprint once in 2,048.
FINGERPRINT_BITS = 11


def _mix(h):
  """MurmurHash3's 32-bit finaliser: every input bit flips each output bit with probability ~1/2."""
  h = (h ^ (h >> 16)) * jnp.uint32(0x85EBCA6B)
  h = (h ^ (h >> 13)) * jnp.uint32(0xC2B2AE35)
  return h ^ (h >> 16)


def _ngram_hashes(tokens, max_n: int):
  """32-bit hashes [N, max_n * L] (uint32) of every 1..max_n-gram of `tokens` [N, L], and a mask of
  the real ones (no padding inside)."""
  tokens = jnp.asarray(tokens).astype(jnp.uint32)
  length = tokens.shape[-1]
  hashes, masks = [], []
  for n in range(1, max_n + 1):
    # n-gram starting at position t, for t < L - n + 1; the last n - 1 positions are padded out.
    parts = [jnp.pad(tokens[..., i:], ((0, 0), (0, i))) for i in range(n)]
    hashed = jnp.full(tokens.shape, _ORDER_OFFSETS[n - 1], jnp.uint32)
    for part in parts:  # mixed after each id: (a, b) and (b, a) differ
      hashed = _mix(hashed ^ part)
    hashes.append(hashed)
    masks.append(jnp.all(jnp.stack([p != PAD_ID for p in parts]), axis=0) & (jnp.arange(length) <= length - n))
  return jnp.concatenate(hashes, -1), jnp.concatenate(masks, -1)


def _bucket_of(hashes, num_buckets: int):
  """The top bits of a multiplicative hash are the bucket (`num_buckets` a power of two)."""
  shift = 32 - (num_buckets.bit_length() - 1)
  return (hashes >> shift if shift < 32 else jnp.zeros_like(hashes)).astype(jnp.int32)


def ngram_buckets(tokens, max_n: int, num_buckets: int):
  """Bucket ids [N, max_n * L] (int32) of every 1..max_n-gram of `tokens` [N, L], and a mask of the
  real ones (no padding inside). Plain uint32 arithmetic: the same on every device and in NumPy.

  `num_buckets` must be a power of two: the top bits of a multiplicative hash are the bucket."""
  hashes, real = _ngram_hashes(tokens, max_n)
  return _bucket_of(hashes, num_buckets), real


def ngram_keys(tokens, max_n: int, num_buckets: int):
  """`ngram_buckets`, plus each n-gram's fingerprint: `FINGERPRINT_BITS` bits of a second,
  independent hash (int32 in [0, 2**FINGERPRINT_BITS)), which tells apart n-grams sharing a bucket."""
  hashes, real = _ngram_hashes(tokens, max_n)
  fingerprints = (_mix(hashes ^ jnp.uint32(_FINGERPRINT_SALT)) >> (32 - FINGERPRINT_BITS)).astype(jnp.int32)
  return _bucket_of(hashes, num_buckets), fingerprints, real


def distinct_buckets(ids, real, num_buckets: int):
  """Each row's distinct buckets among the `real` entries of `ids` [N, K]: ids sorted, and a mask
  that is True once per bucket the row contains (repeats and the rest masked): a binary bag."""
  ids = jnp.where(real, ids, num_buckets)  # the rest sorts last, as one out-of-range id
  ids = jnp.sort(ids, axis=-1)
  first = jnp.concatenate([jnp.ones_like(ids[:, :1], bool), ids[:, 1:] != ids[:, :-1]], -1)
  present = first & (ids < num_buckets)
  return jnp.where(present, ids, 0), present


def present_buckets(tokens, max_n: int, num_buckets: int):
  """Each row's distinct buckets (`distinct_buckets` of every real n-gram): the binarised bag of
  plain hashing, every n-gram of a bucket sharing it (`min_documents=0`)."""
  ids, real = ngram_buckets(tokens, max_n, num_buckets)
  return distinct_buckets(ids, real, num_buckets)


_present_buckets = jax.jit(present_buckets, static_argnums=(1, 2))
_ngram_keys = jax.jit(ngram_keys, static_argnums=(1, 2))


def bucket_document_counts(tokens: np.ndarray, labels: np.ndarray, num_labels: int, max_n: int,
                           num_buckets: int, chunk: int = 2048) -> np.ndarray:
  """How many documents of each label contain each bucket: int [num_buckets, num_labels].

  The buckets come from the model's own jitted function, a chunk of rows at a time; one bincount
  of (label, bucket) pairs over the whole split then counts them, so the whole split fits in one pass."""
  pairs = []
  for start in range(0, len(tokens), chunk):
    ids, present = map(np.asarray, _present_buckets(tokens[start:start + chunk], max_n, num_buckets))
    rows = np.broadcast_to(labels[start:start + chunk, None].astype(np.int64), ids.shape)
    pairs.append(rows[present] * num_buckets + ids[present])
  flat = np.concatenate(pairs) if pairs else np.zeros(0, np.int64)
  return np.bincount(flat, minlength=num_labels * num_buckets).reshape(num_labels, num_buckets).T


def bucket_owners(tokens: np.ndarray, labels: np.ndarray, num_labels: int, max_n: int, num_buckets: int,
                  min_documents: int, chunk: int = 2048) -> tuple[np.ndarray, np.ndarray]:
  """Each bucket's owner: the fingerprint of the n-gram in the most training documents among those
  hashed there (ties: the smaller fingerprint), if it is in at least `min_documents`; -1 for none.
  Returns (owners float32 [num_buckets], the owners' document counts per label int [num_buckets,
  num_labels]). Every (document, n-gram) pair counts once; n-grams are told apart by bucket and
  fingerprint."""
  keys, rows = [], []
  for start in range(0, len(tokens), chunk):
    ids, fingerprints, real = map(np.asarray, _ngram_keys(tokens[start:start + chunk], max_n, num_buckets))
    key = (ids.astype(np.int64) << FINGERPRINT_BITS) | fingerprints
    row = np.broadcast_to(np.arange(start, start + len(ids), dtype=np.int64)[:, None], ids.shape)
    keys.append(key[real])
    rows.append(row[real])
  keys = np.concatenate(keys) if keys else np.zeros(0, np.int64)
  rows = np.concatenate(rows) if rows else np.zeros(0, np.int64)
  key_space = num_buckets << FINGERPRINT_BITS
  pairs = np.unique(rows * key_space + keys)  # each (document, n-gram) once
  keys, labels_of = pairs % key_space, np.asarray(labels)[pairs // key_space].astype(np.int64)
  ngrams, index = np.unique(keys, return_inverse=True)
  counts = np.bincount(index * num_labels + labels_of, minlength=len(ngrams) * num_labels).reshape(-1, num_labels)
  totals = counts.sum(1)
  buckets, fingerprints = ngrams >> FINGERPRINT_BITS, ngrams & ((1 << FINGERPRINT_BITS) - 1)
  order = np.lexsort((fingerprints, -totals, buckets))  # per bucket: most documents first
  first = order[np.r_[True, buckets[order][1:] != buckets[order][:-1]]] if len(order) else order
  first = first[totals[first] >= min_documents]
  owners = np.full(num_buckets, -1.0, np.float32)
  owners[buckets[first]] = fingerprints[first]
  owner_counts = np.zeros((num_buckets, num_labels), np.int64)
  owner_counts[buckets[first]] = counts[first]
  return owners, owner_counts


def log_count_ratios(counts: np.ndarray, alpha: float = 1.0) -> np.ndarray:
  """NBSVM's r = log((p / |p|_1) / (q / |q|_1)) per class (column): p = alpha + the class's document
  counts, q = alpha + every other class's. Float32 [num_buckets, num_labels]; two labels give the
  one column 'label 1 against label 0'."""
  counts = counts.astype(np.float64)
  inside = alpha + counts
  outside = alpha + counts.sum(1, keepdims=True) - counts
  ratios = np.log(inside / inside.sum(0)) - np.log(outside / outside.sum(0))
  return (ratios[:, 1:] if counts.shape[1] == 2 else ratios).astype(np.float32)


def log_prior_ratios(labels: np.ndarray, num_labels: int) -> np.ndarray:
  """log(N_c / N_rest) per class: the NB classifier's bias (one entry for two labels)."""
  counts = np.bincount(labels, minlength=num_labels).astype(np.float64) + 1.0
  prior = np.log(counts / (counts.sum() - counts))
  return (prior[1:] if num_labels == 2 else prior).astype(np.float32)


@register('ngram')
class NgramClassifier(nn.Module):
  """NB-weighted bag of hashed 1- to `max_n`-grams -> trainable linear layer (module docstring)."""
  vocab_size: int
  num_classes: int = 1
  input_kind = 'text'
  max_n: int = setting(2, 'Longest n-gram in the bag (2: uni- and bigrams; docs/text.md compares orders).')
  num_buckets: int = setting(2 ** 20, 'Hash buckets of the bag, a power of two.')
  # A review holds hundreds of n-grams whose ratios sum to tens: the NB score scaled down is a
  # calibrated logit that training then sharpens.
  scale: float = setting(0.05, 'Logit = scale x the Naive Bayes score at initialisation.')
  use_ratios: bool = setting(True, 'Weight the bag by the Naive Bayes ratios; false: a plain logistic '
                             'regression on the bag, from 0.')
  alpha: float = setting(1.0, 'Naive Bayes\' additive smoothing of the counts.')
  # Most of a split's distinct n-grams occur in one review: with plain hashing they share buckets with
  # the useful ones, and in a new review each unseen n-gram adds some trained bucket's weight as noise.
  min_documents: int = setting(2, 'A bucket belongs to the n-gram in the most training reviews among those '
                               'hashed there, if in at least this many (told apart by a fingerprint, the '
                               '`owners` table); the others are no features. 0: plain hashing.')

  def setup(self):
    if self.num_buckets & (self.num_buckets - 1):
      raise ValueError(f'num_buckets={self.num_buckets} is not a power of two')
    shape = (self.num_buckets, self.num_classes)
    self.weights = self.param('weights', nn.initializers.zeros, shape)
    self.ratios = self.param('ratios', nn.initializers.zeros, shape)
    self.bias = self.param('bias', nn.initializers.zeros, (self.num_classes,))
    # Each bucket's owner's fingerprint, -1 for none (a float, so that it travels with the weights).
    # Variables without `owners` are a model trained before owned buckets (its config.json names no
    # min_documents, so the default applies): it reads texts as it was trained, by plain hashing.
    self.owners = None
    if self.min_documents and (self.is_initializing() or self.has_variable('params', 'owners')):
      self.owners = self.param('owners', nn.initializers.constant(-1.0), (self.num_buckets,))

  def bag(self, tokens):
    """The review's features: distinct bucket ids [N, K] and the mask of the present ones."""
    if self.owners is None:
      return present_buckets(tokens, self.max_n, self.num_buckets)
    ids, fingerprints, real = ngram_keys(tokens, self.max_n, self.num_buckets)
    owned = jnp.asarray(self.owners)[ids] == fingerprints
    return distinct_buckets(ids, real & owned, self.num_buckets)

  def __call__(self, tokens, train: bool = False):
    del train
    ids, present = self.bag(tokens)
    if self.use_ratios:
      contributions = (1.0 + jnp.asarray(self.weights)[ids]) * jnp.asarray(self.ratios)[ids]
    else:
      contributions = jnp.asarray(self.weights)[ids]
    contributions = contributions * present[..., None]
    return self.scale * jnp.sum(contributions, axis=1) + self.bias

  def init_from_data(self, params, tokens: np.ndarray, labels: np.ndarray):
    """The NB classifier from the training split: its ratios (training's start) and its log prior ratio as
    the bias. All of `tokens` ([N, L] ids) counts: `init_examples` is None."""
    num_labels = 2 if self.num_classes == 1 else self.num_classes
    labels, tokens = np.asarray(labels), np.asarray(tokens)
    owners = {}
    if self.min_documents:
      table, counts = bucket_owners(tokens, labels, num_labels, self.max_n, self.num_buckets, self.min_documents)
      owners = {'owners': jnp.asarray(table)}
    else:
      counts = bucket_document_counts(tokens, labels, num_labels, self.max_n, self.num_buckets)
    ratios = log_count_ratios(counts, self.alpha) if self.use_ratios else np.zeros_like(params['ratios'])
    return dict(params, ratios=jnp.asarray(ratios), **owners,
                bias=jnp.asarray(log_prior_ratios(labels, num_labels) * self.scale))

  # The owner table is data, not a weight: no optimizer may move it. The ratios train too (better on
  # IMDB than frozen, docs/text.md); --rule=ratios:frozen keeps them the training split's statistics.
  rules = ('owners:frozen',)
  init_examples = None  # init_from_data counts the whole training split
