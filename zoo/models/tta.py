"""Test-time augmentation: the logits of several views of each image, averaged (airbench94's).

Level 0: the image. Level 1: the image and its mirror image, half each. Level 2: the image and its
mirror image weigh a half together; each of the two 1-pixel translations (up-left and down-right,
reflect padding) and its mirror image a quarter together. Each view is its own pass through
`logits`, as airbench94 has it, so only one view's activations need to be held at a time (and a
batch of symbolic size, as export traces it, is never sliced).
Their measured effect: docs/airbench.md and docs/models.md.
"""
import jax.numpy as jnp

from zoo.errors import ZooError

LEVELS = {0: 'none', 1: 'mirror', 2: 'mirror + 1-pixel translations'}


def averaged_logits(logits, images, level: int):
  """`logits(images)` averaged over the views of `level` (LEVELS) of [N, H, W, C] `images`."""
  if level == 0:
    return logits(images)
  mirrored = lambda x: (logits(x) + logits(x[:, :, ::-1])) / 2
  if level == 1:
    return mirrored(images)
  padded = jnp.pad(images, ((0, 0), (1, 1), (1, 1), (0, 0)), mode='reflect')
  height, width = images.shape[1:3]
  up_left, down_right = padded[:, :height, :width], padded[:, 2:, 2:]
  return mirrored(images) / 2 + (mirrored(up_left) + mirrored(down_right)) / 4


def check_level(level: int, model: str) -> None:
  """One line naming the levels when `level` is none of them."""
  if level not in LEVELS:
    known = ', '.join(f'{k} ({v})' for k, v in LEVELS.items())
    raise ZooError(f'--model.tta_level={level} is unknown for {model}; pass {known}')
