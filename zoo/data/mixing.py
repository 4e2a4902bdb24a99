"""Mixup and CutMix (`--mixup_alpha`, `--cutmix_alpha`), as timm's `Mixup` does them per batch.

Every training image is mixed with a partner: the example at the mirrored place of the same global
batch (timm mixes a batch with itself reversed), augmented as it is there. Mixup blends the two
images, `lam x image + (1 - lam) x partner`; CutMix pastes a box of the partner into the image, the
box's area `1 - lam` of the image (clipped at the border, and `lam` corrected to the area kept);
the loss is the cross-entropy with the targets mixed alike (`steps.classification_sums`). With both
alphas, each batch is a coin toss between them (timm's `switch_prob=0.5`); `lam ~ Beta(alpha, alpha)`
of the one chosen, one per batch.

Like the data order, every draw is planned on the host from (seed, epoch) for each step of the
epoch (`plan`), and partners by their place in the global batch, so the same global batch is mixed
alike on any device count, on either input pipeline, and in a resumed run. The mixing itself runs
in the train step, in jax.numpy (`mixed_batch`), on the preprocessed images of both feeds.
"""
import jax.numpy as jnp
import numpy as np

MIX_COLUMNS = 4  # per example: lam, cutmix (1.0) or mixup (0.0), the box centre's row and column in [0, 1)
_MIXING_STREAM = 0x313C  # seeds the draws apart from the [seed, epoch] stream of order and noise
SWITCH_PROBABILITY = 0.5  # timm's: with both alphas, the chance that a batch is cut rather than blended


def plan(order: np.ndarray, noise: np.ndarray, seed: int, epoch: int, mixup_alpha: float,
         cutmix_alpha: float) -> dict:
  """The epoch's mixing, per step and example, from the epoch plan (`pipeline.epoch_plan`'s order
  [steps, global batch] and noise [steps, global batch, k]): `partner` (example indices),
  `partner_noise` (the partner's augmentation noise where it sits in the batch) and `mix` [steps,
  global batch, MIX_COLUMNS] (the batch's draws, the same in each of its rows)."""
  steps, batch = order.shape
  rng = np.random.default_rng([seed, epoch, _MIXING_STREAM])
  coins = rng.random(steps)
  blended = rng.beta(mixup_alpha, mixup_alpha, steps) if mixup_alpha > 0 else np.ones(steps)
  cut = rng.beta(cutmix_alpha, cutmix_alpha, steps) if cutmix_alpha > 0 else np.ones(steps)
  centres = rng.random((steps, 2))
  if mixup_alpha > 0 and cutmix_alpha > 0:
    use_cutmix = coins < SWITCH_PROBABILITY
  else:
    use_cutmix = np.full(steps, cutmix_alpha > 0)
  draws = np.stack([np.where(use_cutmix, cut, blended), use_cutmix, centres[:, 0], centres[:, 1]], axis=-1)
  mix = np.broadcast_to(draws[:, None, :], (steps, batch, MIX_COLUMNS)).astype(np.float32)
  return {'partner': order[:, ::-1].copy(), 'partner_noise': noise[:, ::-1].copy(), 'mix': mix}


def _cut_box(height: int, width: int, lam, centre_row, centre_col):
  """timm's `rand_bbox`: a box of sides int(side x sqrt(1 - lam)) centred at an integer pixel,
  clipped to the image: (top, bottom, left, right)."""
  ratio = jnp.sqrt(1.0 - lam)
  cut_h, cut_w = (height * ratio).astype(jnp.int32), (width * ratio).astype(jnp.int32)
  row, col = (centre_row * height).astype(jnp.int32), (centre_col * width).astype(jnp.int32)
  return (jnp.clip(row - cut_h // 2, 0, height), jnp.clip(row + cut_h // 2, 0, height),
          jnp.clip(col - cut_w // 2, 0, width), jnp.clip(col + cut_w // 2, 0, width))


def mixed_batch(batch: dict) -> dict:
  """A train batch with `partner_inputs`, `partner_label` and `mix` (this device's rows) -> the batch
  with its images mixed and `weight`, each example's share of its own label (the partner's is
  1 - weight)."""
  inputs, partner, mix = batch['inputs'], batch['partner_inputs'], batch['mix']
  lam, cutmix = mix[:, 0], mix[:, 1] > 0.5
  _, height, width = inputs.shape[:3]
  top, bottom, left, right = _cut_box(height, width, lam, mix[:, 2], mix[:, 3])
  rows, cols = jnp.arange(height)[None, :, None], jnp.arange(width)[None, None, :]
  box = ((rows >= top[:, None, None]) & (rows < bottom[:, None, None])
         & (cols >= left[:, None, None]) & (cols < right[:, None, None]))
  cut = jnp.where(box[..., None], partner, inputs)
  kept = 1.0 - ((bottom - top) * (right - left)).astype(jnp.float32) / (height * width)  # timm's corrected lam
  expand = lambda x: x.reshape(-1, *([1] * (inputs.ndim - 1)))
  blended = expand(lam) * inputs + (1.0 - expand(lam)) * partner
  mixed = jnp.where(expand(cutmix), cut, blended)
  rest = {k: v for k, v in batch.items() if k not in ('partner_inputs', 'mix')}
  return {**rest, 'inputs': mixed.astype(inputs.dtype), 'weight': jnp.where(cutmix, kept, lam)}
