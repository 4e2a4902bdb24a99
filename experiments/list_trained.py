"""The models shipped inside the package, one line each: `python -m experiments.list_trained`.

Each name goes wherever a trained workdir goes: `zoo.load(NAME)`, `--mode=predict --workdir=NAME`,
`python -m experiments.serve --workdir=NAME`, `--init_from=NAME`. Its card is
`zoo/trained/NAME/MODEL_CARD.md`. `--json` prints one JSON line per model instead of the table.
"""
import dataclasses
import json

from absl import app, flags

flags.DEFINE_bool('json', False, 'One JSON line per model instead of a table.')
FLAGS = flags.FLAGS


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  from zoo import packed
  models = packed.list_trained()
  if FLAGS.json:
    for model in models:
      print(json.dumps(dataclasses.asdict(model)), flush=True)
    return
  print(f'{"name":<22} {"task":<22} {"classes":>7} {"val. accuracy":>13} {"parameters":>11} {"MB":>6}')
  for model in models:
    accuracy = f'{model.accuracy * 100:.2f} %' if model.accuracy is not None else '-'
    print(f'{model.name:<22} {model.task:<22} {len(model.classes):>7} {accuracy:>13} {model.parameters:>11,} '
          f'{model.megabytes:>6.2f}')


if __name__ == '__main__':
  app.run(main)
