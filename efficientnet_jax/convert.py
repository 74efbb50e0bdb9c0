"""Converts foreign EfficientNet weights into a converted directory (meta.json + orbax).

  python -m efficientnet_jax.convert --source=timm --model=tf_efficientnet_b0 \
      --input=model.safetensors --output=weights/b0
  → prints the absolute DIR it wrote as the last stdout line.

Sources: timm (`.pth`/`.bin`/`.safetensors`; `--model` may be timm's name: `tf_efficientnet_b0`
is TF-ported with 'same' padding, `efficientnet_b0` timm-trained with symmetric padding, plain
`b0` means the former), efficientnet_pytorch (`.pth`), keras (`.h5`, `.weights.h5`).
The recorded eval preprocessing defaults to the weight family's own; `--resolution`,
`--crop_padding`, `--interpolation`, `--mean`, `--std` override it (e.g. timm's efficientnet_b3
weights evaluate best at `--resolution=320 --crop_padding=0`).
Bad input prints one line on stderr, exits 2 and writes nothing; an existing non-empty DIR is kept
unless `--overwrite`.
"""

import sys

from absl import app
from absl import flags

from efficientnet_jax import cli

FLAGS = flags.FLAGS

def preprocessing_overrides() -> dict:
  """The preprocessing flags that were given, checked."""
  overrides = {}
  for key in ('resolution', 'crop_padding', 'interpolation'):
    if getattr(FLAGS, key) is not None:
      overrides[key] = getattr(FLAGS, key)
  for key in ('mean', 'std'):
    values = getattr(FLAGS, key)
    if values is not None:
      try:
        numbers = [float(v) for v in values]
      except ValueError:
        numbers = []
      if len(numbers) != 3:
        raise cli.UsageError(f'--{key} needs three numbers R,G,B on the 0..255 scale, got '
                             f'{",".join(values)!r}.')
      overrides[key] = numbers
  return overrides


def convert(source: str, model: str, input_path: str, output: str, *, overwrite: bool = False,
            preprocessing: dict | None = None) -> str:
  """Converts `input_path` and writes `output`; returns the DIR written."""
  from efficientnet_jax.weights import converters  # pylint: disable=g-import-not-at-top
  from efficientnet_jax.weights import pretrained  # pylint: disable=g-import-not-at-top
  converters.get_converter(source)  # Unknown source: fail before reading anything.
  converted = converters.convert_file(source, model, input_path, preprocessing)
  return pretrained.save_converted(output, converted.meta['model'], converted.variables,
                                   converted.meta, overwrite=overwrite)


def _define_flags() -> None:
  # Defined only when run as a program, so importing this module (tests) cannot collide with
  # another tool's flags of the same name.
  flags.DEFINE_string('source', None, 'Format of --input: timm, efficientnet_pytorch or keras.')
  flags.DEFINE_string('model', None, 'Variant: b0 … b8, l2, lite0 … lite4 (or the source\'s own '
                      'name, e.g. tf_efficientnet_b0 / efficientnet_b0 for timm).')
  flags.DEFINE_string('input', None, 'The foreign weights file.')
  flags.DEFINE_string('output', None, 'The directory to write (meta.json + variables/).')
  flags.DEFINE_bool('overwrite', False, 'Replace --output if it exists and is not empty.')
  flags.DEFINE_integer('resolution', None, 'Override the recorded eval resolution.')
  flags.DEFINE_integer('crop_padding', None, 'Override the recorded eval crop padding '
                       '(centre crop keeps res/(res+crop_padding) of the shorter side; 0 = all).')
  flags.DEFINE_string('interpolation', None, 'Override the recorded resize method (bicubic, ...).')
  flags.DEFINE_list('mean', None, 'Override the recorded per-channel mean (0..255 scale), R,G,B.')
  flags.DEFINE_list('std', None, 'Override the recorded per-channel std (0..255 scale), R,G,B.')


@cli.run
def main(argv):
  if len(argv) > 1:
    raise cli.UsageError(f'Unexpected arguments {argv[1:]}; options are --flag=value.')
  cli.quiet_libraries()  # Orbax and JAX narrate every step at INFO.
  missing = [f'--{name}' for name in ('source', 'model', 'input', 'output')
             if not getattr(FLAGS, name)]
  if missing:
    raise cli.UsageError(f'Missing {", ".join(missing)}; usage: python -m '
                         'efficientnet_jax.convert --source=timm|efficientnet_pytorch|keras '
                         '--model=NAME --input=FILE --output=DIR.')
  try:
    directory = convert(FLAGS.source, FLAGS.model, FLAGS.input, FLAGS.output,
                        overwrite=FLAGS.overwrite, preprocessing=preprocessing_overrides())
  except ImportError as e:  # A missing optional reader (torch, safetensors): say what to install.
    raise cli.UsageError(str(e)) from None
  print(directory, flush=True)


if __name__ == '__main__':
  _define_flags()
  sys.exit(app.run(main, flags_parser=cli.parse_flags))
