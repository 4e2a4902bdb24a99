"""What a run leaves for people: history.json, the seed's accuracy plot, TensorBoard events, eval.json."""
import json
import logging
from pathlib import Path

HISTORY_FILE = 'history.json'
PLOT_FILE = 'history.png'
EVAL_FILE = 'eval.json'


def read_history(workdir) -> list[dict]:
  path = Path(workdir) / HISTORY_FILE
  return json.loads(path.read_text()) if path.exists() else []


def write_json(path: Path, value) -> None:
  """Writes via a temporary file and a rename, so a kill never leaves half a file."""
  tmp = path.with_name(path.name + '.tmp')
  tmp.write_text(json.dumps(value, indent=2) + '\n')
  tmp.replace(path)


def plot_history(history: list[dict], path: Path) -> None:
  """The seed's figure: training accuracy and val_accuracy per epoch, y from 0 to 1."""
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  evaluated = [h for h in history if 'eval_accuracy' in h]  # --eval_every_epochs may skip some
  fig, ax = plt.subplots(figsize=(6, 4))
  ax.plot([h['epoch'] for h in history], [h['train_accuracy'] for h in history], marker='o', label='accuracy')
  ax.plot([h['epoch'] for h in evaluated], [h['eval_accuracy'] for h in evaluated], marker='o',
          label='val_accuracy')
  ax.set_xlabel('Epoch')
  ax.set_ylabel('Accuracy')
  ax.set_ylim([0, 1])
  ax.legend(loc='lower right')
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


class TensorBoard:
  """Scalars under `<workdir>/tensorboard`, written by process 0 only."""

  def __init__(self, workdir, enabled: bool):
    self.writer = None
    if enabled:
      try:
        from flax.metrics import tensorboard  # writes through TensorFlow
      except ImportError as e:
        logging.getLogger('zoo').warning('No TensorBoard scalars (%s); history.json and the plot are written', e)
        return
      self.writer = tensorboard.SummaryWriter(str(Path(workdir) / 'tensorboard'))

  def scalars(self, step: int, values: dict) -> None:
    if self.writer:
      for name, value in values.items():
        self.writer.scalar(name, value, step)
      self.writer.flush()

  def close(self) -> None:
    if self.writer:
      self.writer.close()


def format_duration(seconds: float) -> str:
  minutes, seconds = divmod(int(seconds), 60)
  hours, minutes = divmod(minutes, 60)
  return f'{hours}h{minutes:02d}m{seconds:02d}s' if hours else f'{minutes}m{seconds:02d}s'
