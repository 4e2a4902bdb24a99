"""`Config.validate`: every integer setting out of range is named in one line before anything is
written, instead of crashing (or deleting checkpoints) later."""
import dataclasses

import pytest

from zoo.config import Config
from zoo.errors import ZooError

# (--vocab_size and --max_length, Optional[int], are checked by the data layer before anything is written.)
INTEGER_FIELDS = [f.name for f in dataclasses.fields(Config) if f.type is int]


@pytest.mark.parametrize('name', INTEGER_FIELDS)
def test_every_integer_field_refuses_a_value_far_out_of_range(name):
  """One line naming the flag, whichever integer it is (the lookahead's settings with --lookahead on)."""
  with pytest.raises(ZooError, match=f'--{name}=-1000000000'):
    Config(**{name: -10**9}, lookahead=name.startswith('lookahead')).validate(1)


def test_a_seed_beyond_64_bits_is_refused():
  with pytest.raises(ZooError, match=f'--seed={2**63} .*; pass --seed=0 to {2**63 - 1}'):
    Config(seed=2**63).validate(1)


@pytest.mark.parametrize('name, value, fix', [
    ('keep_checkpoints', 0, 'pass --keep_checkpoints=1 or more'),
    ('keep_checkpoints', -1, 'pass --keep_checkpoints=1 or more'),
    ('log_every_steps', 0, 'pass --log_every_steps=1 or more'),
    ('seed', -1, 'pass --seed=0 to '),
    ('eval_every_epochs', 0, 'pass --eval_every_epochs=1 or more'),
    ('steps_per_dispatch', 0, 'pass --steps_per_dispatch=1 or more'),
    ('checkpoint_every_steps', -1, 'pass --checkpoint_every_steps=0 or more'),
])
def test_out_of_range_settings_name_the_flag_and_the_fix(name, value, fix):
  with pytest.raises(ZooError, match=f'--{name}={value} .*; {fix}'):
    Config(**{name: value}).validate(1)


def test_the_smallest_allowed_values_pass():
  Config(keep_checkpoints=1, log_every_steps=1, seed=0, eval_every_epochs=1, steps_per_dispatch=1,
         checkpoint_every_steps=0, lookahead=True, lookahead_start_epoch=0, lookahead_every_steps=1,
         crop_padding=0, image_size=0).validate(1)


def test_keep_checkpoints_help_says_what_a_smaller_value_on_resume_deletes():
  help_text = {f.name: f.metadata['help'] for f in dataclasses.fields(Config)}['keep_checkpoints']
  assert 'newest' in help_text and 'resumed' in help_text
