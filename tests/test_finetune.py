"""Fine-tuning from a trained workdir (`--init_from`, `--freeze`): what is copied (the source's exact
arrays, BatchNorm statistics included), what is new, what stays frozen, a text source's vocabulary,
a resume without the source, and one line, with nothing written, when the architectures do not fit."""
import dataclasses
import json
import shutil

import jax
import numpy as np
import pytest

from conftest import assert_one_line_error, run_experiment, train_in_process
from test_datasets import image_folder
from zoo import checkpoints
from zoo import workdir as workdir_lib
from zoo.config import Config
from zoo.errors import ZooError
from zoo.training import builder, finetune, loop, steps

SMALL = ('--epochs=1', '--batch_size=8', '--eval_batch_size=8', '--optimizer=sgd', '--learning_rate=0.05',
         '--momentum=0.9', '--weight_decay=0.01')
# The sources train with another seed than the fine-tuning runs (0): a copied array then differs from
# the one a fresh start would draw.
SOURCE_SEED = '--seed=1'


def _flat(tree) -> dict:
  return {'/'.join(str(getattr(k, 'key', k)) for k in path): np.asarray(leaf)
          for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _arrays(workdir, collection='params', step=None) -> dict:
  _, tree = checkpoints.restore_arrays(workdir, step)
  return _flat(tree.get(collection, {}))


def _assert_copied(start: dict, source: dict, head: str | None) -> None:
  """Every array of `start` outside the head is the source's, bit for bit; the head is another width."""
  assert set(start) == set(source)
  for path in source:
    if head and path.startswith(head + '/'):
      assert start[path].shape != source[path].shape, path
    else:
      np.testing.assert_array_equal(start[path], source[path], err_msg=path)


@pytest.fixture(scope='module')
def source(tmp_path_factory):
  """An MLP trained on 10 classes (mock CIFAR-10)."""
  workdir = tmp_path_factory.mktemp('source') / 'w'
  train_in_process('cifar', f'--workdir={workdir}', '--model=mlp', SOURCE_SEED, *SMALL)
  return workdir


@pytest.fixture(scope='module')
def photos(tmp_path_factory):
  return image_folder(tmp_path_factory.mktemp('photos') / 'p', classes=('bus', 'car', 'ship', 'truck'),
                      per_class=(8, 4))


def _finetune_flags(workdir, photos, source, *flags) -> tuple:
  return (f'--image_folder={photos}', f'--workdir={workdir}', '--model=mlp', f'--init_from={source}',
          '--image_size=32', *SMALL, *flags)


def _finetune(workdir, photos, source, *flags):
  """Through the command line: its one-line errors are the point of the tests that use this."""
  return run_experiment('images', *_finetune_flags(workdir, photos, source, *flags), mock=False)


@pytest.fixture(scope='module')
def finetuned(tmp_path_factory, photos, source):
  """The MLP fine-tuned on 4 classes of photos, every layer training (in this process, from the
  command line's Config)."""
  workdir = tmp_path_factory.mktemp('finetuned') / 'w'
  train_in_process('images', *_finetune_flags(workdir, photos, source), mock=False)
  return workdir


def test_freeze_backbone_trains_a_new_head_and_keeps_every_other_parameter(tmp_path, photos, source):
  _, log = train_in_process('images', *_finetune_flags(tmp_path / 'w', photos, source, '--freeze=backbone'), mock=False)
  assert 'new: params/Dense_2/bias, params/Dense_2/kernel' in log
  before, after = _arrays(source), _arrays(tmp_path / 'w')
  assert after['Dense_2/kernel'].shape == (256, 4) and before['Dense_2/kernel'].shape == (256, 10)
  for path in before:
    if not path.startswith('Dense_2/'):
      np.testing.assert_array_equal(after[path], before[path], err_msg=path)  # copied, then frozen: bit-identical
  recorded = json.loads((tmp_path / 'w' / 'config.json').read_text())
  assert recorded['init_from'] == str(source) and recorded['freeze'] == 'backbone'


def test_the_start_is_the_sources_exact_arrays_kept_as_checkpoint_0(finetuned, source):
  source_step, _ = checkpoints.restore_arrays(source)
  _assert_copied(_arrays(finetuned, step=0), _arrays(source), head='Dense_2')
  record = json.loads((finetuned / workdir_lib.INIT_FROM_FILE).read_text())
  assert record['path'] == str(source) and record['step'] == source_step and len(record['sha256']) == 64


def test_without_freezing_the_copied_backbone_trains_on(finetuned, source):
  before, after = _arrays(source), _arrays(finetuned)
  assert not np.array_equal(after['Dense_0/kernel'], before['Dense_0/kernel'])
  # ...from the copy: one epoch of 4 small steps moves it far less than a fresh initialisation differs.
  assert np.abs(after['Dense_0/kernel'] - before['Dense_0/kernel']).max() < 0.1


def test_a_resume_never_reads_the_source_again(finetuned, tmp_path):
  """The source moved away (or its path spelt otherwise): the run resumes from its own checkpoint."""
  recorded = workdir_lib.read_config(finetuned)
  for elsewhere in (str(tmp_path / 'moved'), ''):
    history = loop.train_and_evaluate(dataclasses.replace(recorded, init_from=elsewhere), finetuned)
    assert [entry['epoch'] for entry in history] == [1]
  assert workdir_lib.read_config(finetuned).init_from == recorded.init_from  # the record is kept as it was


def test_a_fine_tune_stopped_before_its_checkpoint_0_starts_again_from_the_recorded_source(finetuned, tmp_path):
  """init_from.json is written before checkpoint 0: a restart reads it and compares the source."""
  restarted = tmp_path / 'restarted'
  shutil.copytree(finetuned, restarted)
  shutil.rmtree(restarted / 'checkpoints')
  history = loop.train_and_evaluate(workdir_lib.read_config(restarted), restarted)
  assert [entry['epoch'] for entry in history] == [1]
  record = json.loads((restarted / 'init_from.json').read_text())
  (restarted / 'init_from.json').write_text(json.dumps(dict(record, sha256='0' * 64)))
  shutil.rmtree(restarted / 'checkpoints')
  with pytest.raises(ZooError, match='is not the start .* recorded'):
    loop.train_and_evaluate(workdir_lib.read_config(restarted), restarted)


def test_a_workdir_trained_from_scratch_does_not_resume_as_a_fine_tune(source):
  config = dataclasses.replace(workdir_lib.read_config(source), init_from=str(source))
  with pytest.raises(ZooError, match='init_from'):
    workdir_lib.check_resumable(config, source)


def test_an_architecture_that_does_not_fit_writes_nothing_and_the_corrected_command_runs(tmp_path, photos, source):
  workdir = tmp_path / 'w'
  result = _finetune(workdir, photos, source, '--model=simple_cnn')
  assert_one_line_error(result, 'does not fit this model: params/Conv_0/bias', 'drop --init_from')
  assert not workdir.exists() or list(workdir.iterdir()) == []
  train_in_process('images', *_finetune_flags(workdir, photos, source), mock=False)  # nothing is in its way


def test_a_source_that_is_not_a_workdir_is_refused_before_reading_data(tmp_path, photos):
  result = _finetune(tmp_path / 'w', photos, tmp_path / 'nothing')
  assert_one_line_error(result, 'nothing is neither a workdir, a .zoo file, a URL nor a shipped model', 'pass one (shipped models:')


# A model with BatchNorm: its running statistics are copied with the parameters.

@pytest.fixture(scope='module')
def resnet_source(tmp_path_factory):
  """ResNet-20 trained for 2 steps on 16 mock CIFAR-10 images of 8x8: BatchNorm statistics that
  differ from a fresh start's (mean 0, variance 1)."""
  workdir = tmp_path_factory.mktemp('resnet') / 'w'
  train_in_process('cifar', f'--workdir={workdir}', '--model=resnet20', '--image_size=8', SOURCE_SEED, *SMALL,
                   examples=16)
  return workdir


def test_batchnorm_statistics_are_copied_with_the_parameters(resnet_source, tmp_path):
  config = Config(image_folder='unused', image_size=8, model='resnet20', init_from=str(resnet_source))
  program = builder.build(config, {'num_classes': 4}, np.zeros((1, 8, 8, 3), np.float32), 1, steps.data_mesh())
  start = finetune.start_from(program, program.init_state(), finetune.read_source(config, tmp_path / 'w'),
                             tmp_path / 'w')
  head = program.head
  _assert_copied(_flat(jax.device_get(start.state.params)), _arrays(resnet_source), head)
  statistics = _flat(jax.device_get(start.state.batch_stats))
  source_statistics = _arrays(resnet_source, 'batch_stats')
  assert statistics and not any(np.allclose(s, 0) or np.allclose(s, 1) for s in source_statistics.values())
  _assert_copied(statistics, source_statistics, head)
  assert not (tmp_path / 'w').exists()  # the plan reads the source and writes nothing


# Text: a fine-tune reads texts with the source's vocabulary, so that a copied id is the same word.

def _text_folder(root, words: dict, count: int):
  for split, per_class in (('train', count), ('test', 4)):
    for name, vocabulary in words.items():
      (root / split / name).mkdir(parents=True)
      for i in range(per_class):
        (root / split / name / f'{i}.txt').write_text(' '.join(vocabulary.split()[:1 + i % 3]) + ' film',
                                                      encoding='utf-8')
  return root


def _text_config(folder, **fields) -> Config:
  return Config(**{'text_folder': str(folder), 'model': 'ngram', 'vocab_size': 50, 'max_length': 8, 'epochs': 1,
                    'batch_size': 8, 'eval_batch_size': 8, 'optimizer': 'sgd', 'learning_rate': 0.05,
                    'tensorboard': False, 'split_cache': '', **fields})


@pytest.fixture(scope='module')
def text_source(tmp_path_factory):
  """The n-gram model trained on reviews whose words the fine-tuning data ranks otherwise."""
  root = tmp_path_factory.mktemp('text_source')
  folder = _text_folder(root / 'reviews', {'neg': 'awful boring dull', 'pos': 'wonderful great superb'}, 12)
  loop.train_and_evaluate(_text_config(folder, seed=1), root / 'w')
  return root / 'w'


def test_a_text_fine_tune_reads_texts_with_the_sources_vocabulary(text_source, tmp_path):
  folder = _text_folder(tmp_path / 'more', {'neg': 'dull meh awful', 'pos': 'superb fine good'}, 8)
  workdir = tmp_path / 'w'
  loop.train_and_evaluate(_text_config(folder, init_from=str(text_source)), workdir)
  vocabulary = workdir_lib.vocabulary_path
  assert vocabulary(workdir).read_bytes() == vocabulary(text_source).read_bytes()
  assert workdir_lib.read_description(workdir)['inputs'] == workdir_lib.read_description(text_source)['inputs']
  # Every array is the source's at the start: its trained NB ratios, not the new split's counts.
  _assert_copied(_arrays(workdir, step=0), _arrays(text_source), head=None)


def test_a_text_fine_tune_with_another_vocabulary_size_is_refused_before_writing(text_source, tmp_path):
  config = _text_config(_text_folder(tmp_path / 'more', {'neg': 'dull', 'pos': 'fine'}, 8),
                        init_from=str(text_source), vocab_size=60)
  with pytest.raises(ZooError, match='pass --vocab_size=50 --max_length=8'):
    loop.train_and_evaluate(config, tmp_path / 'w')
  assert not (tmp_path / 'w').exists()
