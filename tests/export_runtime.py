"""Runs an exported model as a user's server would: onnxruntime or TensorFlow alone, no JAX, no zoo.

usage: python tests/export_runtime.py REQUESTS.json
       python tests/export_runtime.py -    (one REQUESTS.json path per line of stdin, one answer line each)
REQUESTS: a list of {"format": "onnx" | "saved_model", "path": model file or directory, "inputs": a
.npy file (uint8 images, int32 token ids) or a list of texts, "signature": SavedModel signature,
"out": .npz}, all run in this one process (each runtime is imported once). For each, writes the
probabilities of the whole batch and of its first row alone (the batch dimension is dynamic) to
`out`; prints one JSON line: a list of what each file says about itself (its class names, metadata,
input), and whether JAX or the zoo were imported (JAX is made unimportable, since TensorFlow would
import it). With `-`, a server that several tests share (TensorFlow and onnxruntime start once): a
request that fails answers {"error": its traceback} and the next one is still served.
"""
import json
import sys
from pathlib import Path

import numpy as np


def run_onnx(request: dict):
  import onnxruntime
  runtime = onnxruntime.InferenceSession(request['path'], providers=['CPUExecutionProvider'])
  inputs = np.load(request['inputs'])
  name = runtime.get_inputs()[0].name
  run = lambda batch: runtime.run(['probabilities'], {name: batch})[0]
  metadata = runtime.get_modelmeta().custom_metadata_map
  info = {'class_names': json.loads(metadata['class_names']), 'metadata': metadata, 'input_name': name,
          'input_type': runtime.get_inputs()[0].type, 'input_shape': runtime.get_inputs()[0].shape}
  return run(inputs), run(inputs[:1]), info


def run_saved_model(request: dict):
  import tensorflow as tf
  loaded = tf.saved_model.load(request['path'])
  signature = loaded.signatures[request['signature']]
  (name,) = signature.structured_input_signature[1]
  inputs = request['inputs']
  inputs = tf.constant(inputs) if isinstance(inputs, list) else tf.constant(np.load(inputs))
  run = lambda batch: signature(**{name: batch})['probabilities'].numpy()
  asset = (Path(request['path']) / 'assets' / 'class_names.txt').read_text(encoding='utf-8').split('\n')
  info = {'class_names': [n.decode() for n in loaded.class_names.numpy()], 'asset_class_names': asset,
          'metadata': json.loads(loaded.metadata.numpy().decode()), 'input_name': name}
  return run(inputs), run(inputs[:1]), info


def answer(requests_path: str) -> dict:
  answers = []
  for request in json.loads(Path(requests_path).read_text()):
    batch, first, found = (run_onnx if request['format'] == 'onnx' else run_saved_model)(request)
    np.savez(request['out'], batch=batch, first=first)
    answers.append(found)
  info = {'answers': answers}
  info['jax_imported'] = any((name == 'jax' or name.startswith('jax.')) and module is not None
                             for name, module in sys.modules.items())
  info['zoo_imported'] = 'zoo' in sys.modules
  return info


if __name__ == '__main__':
  # TensorFlow imports JAX by itself when it is installed (for its TFLite converter, optionally):
  # made unimportable here, so that the exported models are shown to run without it.
  sys.modules['jax'] = None
  if sys.argv[1] != '-':
    print(json.dumps(answer(sys.argv[1])))
  else:
    import traceback
    for line in sys.stdin:
      try:
        reply = answer(line.strip())
      except Exception:  # pylint: disable=broad-except
        reply = {'error': traceback.format_exc()}
      print(json.dumps(reply), flush=True)
