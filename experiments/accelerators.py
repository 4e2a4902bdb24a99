"""Where JAX computes and with whom: the platform, the compilation cache and multi-process setup.

Its flags (`--accelerator`, `--deterministic`, `--compilation_cache` and the three multi-process
flags) belong to every entry point that runs a model; `setup()` applies them once, before JAX
touches a device.
"""
import os

from absl import flags

from zoo import cache_dirs
from zoo.errors import ZooError

FLAGS = flags.FLAGS

flags.DEFINE_enum('accelerator', 'auto', ['auto', 'cpu', 'gpu', 'tpu'],
                  'Where JAX computes; auto takes the best available.')
flags.DEFINE_string('coordinator_address', None, 'Multi-process: host:port of process 0 '
                    '(jax.distributed). On a TPU pod or under SLURM, leave the three flags unset: '
                    'JAX detects them.')
flags.DEFINE_integer('num_processes', None, 'Multi-process: how many processes train together.')
flags.DEFINE_integer('process_id', None, 'Multi-process: this process\'s index, 0 .. num_processes-1.')
flags.DEFINE_string('compilation_cache', cache_dirs.default_dir('jax_compilation'),
                    'Directory of JAX\'s persistent compilation cache: a rerun of the same program '
                    'loads its compiled steps instead of compiling them ("" turns it off).')
flags.DEFINE_bool('deterministic', False,
                  'GPU: XLA\'s deterministic ops (--xla_gpu_deterministic_ops: no autotuning, deterministic '
                  'reductions and convolutions), so a seed reproduces bit for bit; slower. CPU runs are '
                  'deterministic already.')


def setup() -> None:
  """Pins JAX to `--accelerator` before any computation, joins a multi-process run, turns the
  compilation cache on; one line if the platform is not there."""
  import jax
  name = FLAGS.accelerator
  # Not 'gpu': JAX expands it to cuda,rocm,oneapi and fails unless all three plugins are installed.
  # JAX already prefers a GPU over the CPU; the check below says so if there is none.
  platforms = {'cpu': 'cpu', 'tpu': 'tpu'}.get(name)
  if FLAGS.deterministic:  # read by XLA when the backend starts, i.e. at jax.devices() below
    os.environ['XLA_FLAGS'] = f'{os.environ.get("XLA_FLAGS", "")} --xla_gpu_deterministic_ops=true'.strip()
  if platforms:
    jax.config.update('jax_platforms', platforms)
  if FLAGS.compilation_cache:
    # A rerun loads its compiled steps instead of compiling them; measured in docs/performance.md.
    jax.config.update('jax_compilation_cache_dir', os.path.expanduser(FLAGS.compilation_cache))
    jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.0)
    jax.config.update('jax_persistent_cache_min_entry_size_bytes', 0)
  _start_distributed(jax)
  try:
    devices = jax.devices()
  except RuntimeError as e:
    reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    raise ZooError(f'--accelerator={name}: JAX finds no {name.upper()} here ({reason}); install the '
                   f'matching extra (pip install -e ".[cuda]" or ".[tpu]") or pass --accelerator=cpu') from e
  if name == 'gpu' and devices[0].platform not in ('gpu', 'cuda', 'rocm'):
    raise ZooError(f'--accelerator=gpu: JAX sees only {devices[0].platform} devices; '
                   'install the CUDA extra (pip install -e ".[cuda]") or pass --accelerator=cpu')


def _in_cluster() -> bool:
  """A launcher whose settings jax.distributed.initialize() reads by itself (SLURM, TPU pods)."""
  return (int(os.environ.get('SLURM_NTASKS', '1')) > 1
          or ',' in os.environ.get('TPU_WORKER_HOSTNAMES', ''))


def _start_distributed(jax) -> None:
  """Joins the processes of a multi-process run before any device is touched."""
  given = [FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id]
  if all(v is None for v in given) and not _in_cluster():
    return
  if any(v is None for v in given) and not _in_cluster():
    raise ZooError('--coordinator_address, --num_processes and --process_id go together; pass all three '
                   '(e.g. --coordinator_address=localhost:1234 --num_processes=2 --process_id=0)')
  if (FLAGS.accelerator == 'cpu' or os.environ.get('JAX_PLATFORMS') == 'cpu'):
    jax.config.update('jax_cpu_collectives_implementation', 'gloo')  # CPU collectives across processes
  # SIGTERM is the zoo's own (zoo/training/preemption.py): JAX's handler would take a notice that
  # nobody asks for, and its sync point comes several boundaries late.
  jax.config.update('jax_enable_preemption_service', False)
  try:
    jax.distributed.initialize(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id)
  except Exception as e:
    raise ZooError(f'could not join the multi-process run at {FLAGS.coordinator_address} '
                   f'({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ""}); check the address '
                   'and that every process got the same --num_processes') from e
