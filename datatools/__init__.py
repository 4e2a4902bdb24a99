"""Data tools: TFDS splits written out in the forms the zoo reads without TFDS, `python -m
datatools.save_splits` (NumPy `.npz` files, for a machine with JAX but no TensorFlow) and `python -m
datatools.split_to_folder` (a folder of class subfolders, the layout `--image_folder` and
`--text_folder` read). Installed with the zoo: its error messages send users to `save_splits`."""
