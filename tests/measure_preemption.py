"""How soon a two-process run stops after SIGTERM to one process: the setting of docs/devices.md's
preemption figures (mock CIFAR-10, simple_cnn, 200 steps an epoch, 50 steps a dispatch, the notice
just after step 300 of 400). Prints the seconds from the signal to both processes' exit and the step
saved.

  python tests/measure_preemption.py
"""
import re
import signal
import tempfile
import time
from pathlib import Path

import test_preemption as harness

harness.EXAMPLES = 3200
harness.FLAGS = ('--epochs=2', '--batch_size=16', '--eval_batch_size=80', '--log_every_steps=50',
                 '--steps_per_dispatch=50', '--optimizer=sgd', '--learning_rate=0.05', '--model=simple_cnn')

if __name__ == '__main__':
  folder = Path(tempfile.mkdtemp())
  run = harness.TwoProcesses(folder / 'w', folder / 'logs')
  run.wait_for_progress(1, 250)
  sent = time.time()
  run.processes[1].send_signal(signal.SIGTERM)
  codes = run.wait(300)
  print({'exit_codes': codes, 'seconds_to_exit': round(time.time() - sent, 1),
         'saved_step': re.findall(r'saved step (\d+)', run.stderr(1)),
         'last_progress_steps': [int(s) for s in re.findall(r'epoch \d+/\d+ step (\d+)/', run.stderr(1))][-3:]})
