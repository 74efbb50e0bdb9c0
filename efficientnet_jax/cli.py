"""What the command-line entry points share: one-line errors, a quiet console, multi-process start.

A mistake in the input (a flag, a config key or value, a path, a checkpoint of another model)
prints one `error: ...` line on stderr and exits 2, before anything is written; the other codes
are in `errors.py` (3 diverged, 4 a checkpoint write failed). Other exceptions are bugs and keep
their traceback; EFFICIENTNET_JAX_TRACEBACK=1 shows it for the input errors too.

Libraries (orbax, JAX, TensorFlow) narrate at INFO; the tools show only warnings unless
`--verbosity` is given, so that the console holds what the tool itself prints.
"""

from __future__ import annotations

import os
import re
import sys
from typing import Callable, NoReturn

from absl import flags
from absl import logging

from efficientnet_jax import config as config_lib
from efficientnet_jax import schema
# The errors the tools raise, importable from here too (`cli.UsageError`).
from efficientnet_jax.errors import USAGE_EXIT_CODE, UsageError  # noqa: F401

# TensorFlow's C++ start-up lines (CPU features, oneDNN) before its import, wherever that is.
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

FLAGS = flags.FLAGS
TRACEBACK_ENV = 'EFFICIENTNET_JAX_TRACEBACK'


def quiet_libraries() -> None:
  """Shows warnings and errors only, unless the user passed `--verbosity`.

  absl's verbosity is the level of the Python root logger too, which JAX and orbax log to.
  """
  if 'verbosity' not in FLAGS or not FLAGS['verbosity'].present:
    logging.set_verbosity(logging.WARNING)


def define_distributed_flags() -> None:
  """The flags of a multi-process run (`main`, `evaluate`, the experiment scripts)."""
  flags.DEFINE_string('coordinator_address', None, 'HOST:PORT of process 0, for a run started '
                      'by hand; omit on SLURM (srun), Open MPI, a TPU pod or Kubernetes, where '
                      'jax detects the run.')
  flags.DEFINE_integer('num_processes', None, 'Number of processes (with coordinator_address).')
  flags.DEFINE_integer('process_id', None, 'This process index (with coordinator_address).')
  flags.DEFINE_string('local_device_ids', None, 'The devices this process drives in a '
                      'multi-process run: "all" or indices "0,1". Default: all it sees when it '
                      'is alone on its node, else the GPU of its local rank.')


def initialize_distributed() -> None:
  """Joins a multi-process run (`distributed.py`: flags, else jax's detection, else one process)."""
  # pylint: disable=g-import-not-at-top
  from efficientnet_jax import distributed
  member = distributed.membership(FLAGS.coordinator_address, FLAGS.num_processes,
                                  FLAGS.process_id, FLAGS.local_device_ids)
  distributed.start(member)
  import jax
  if member is not None and jax.default_backend() == 'cpu':
    # On CPU the persistent compilation cache keys differ per process and only process 0 writes
    # entries, so with a warm cache process 0 reaches the first collective minutes before the
    # others, and gloo gives a late peer 30 s. Compiling everywhere keeps the processes in step.
    jax.config.update('jax_enable_compilation_cache', False)


# Errors that are the user's input, not a bug: shown as one line, exit code 2. An exception
# with an `exit_code` attribute (the classes of `errors.py`) is shown the same way, with its code.
EXPECTED_ERRORS: tuple[type[BaseException], ...] = (
    ValueError, KeyError, FileNotFoundError, PermissionError, NotADirectoryError,
    IsADirectoryError)


def fail(message: str, exit_code: int = USAGE_EXIT_CODE, *, immediately: bool = False,
         label: str = 'error') -> NoReturn:
  """Prints `error: message` (or `LABEL: message`) as one line on stderr and exits.

  With `immediately`, exits without waiting for other threads (`os._exit`, after flushing): a
  library's stuck background threads must not hold the process (`errors.CheckpointWriteError`).
  """
  logging.flush()
  print(f'{label}: {" ".join(message.split())}', file=sys.stderr, flush=True)
  if immediately:
    sys.stdout.flush()
    os._exit(exit_code)  # pylint: disable=protected-access
  sys.exit(exit_code)


def run(main: Callable[[list[str]], None]) -> Callable[[list[str]], None]:
  """Wraps an absl main so that input errors print one line on stderr and exit 2."""
  def wrapped(argv):
    try:
      main(argv)
    except Exception as e:  # pylint: disable=broad-except
      exit_code = getattr(e, 'exit_code', None)
      if isinstance(e, EXPECTED_ERRORS) and exit_code is None:
        exit_code = USAGE_EXIT_CODE
      if exit_code is None or os.environ.get(TRACEBACK_ENV):
        raise
      message = str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)
      fail(message, exit_code, immediately=getattr(e, 'exit_immediately', False),
           label=getattr(e, 'label', 'error'))
  return wrapped


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing (pass as `app.run(main, flags_parser=cli.parse_flags)`), one-line errors.

  `config_flags` loads the config file and applies `--config.key=value` while the flags are
  parsed, before `main` runs, and reports a mistake as a traceback. The overrides of declared
  keys (`schema.KEYS`, also under a study config's `train.`) are checked against the schema
  first, so a mistyped value names the key and the type it expects; `--help` exits 0.
  """
  try:
    check_config_overrides(argv)
  except ValueError as e:
    fail(str(e))
  try:
    remaining = FLAGS(argv)
    if 'config' in FLAGS and FLAGS['config'].present:
      FLAGS.config.keys()  # A config file that failed to load raises on first access.
    return remaining
  except SystemExit as e:
    # absl prints the usage for --help and exits 1; asking for help is not a failure.
    if any(arg in _HELP_FLAGS for arg in argv[1:]):
      raise SystemExit(0) from e
    raise
  except Exception as e:  # pylint: disable=broad-except
    if os.environ.get(TRACEBACK_ENV):
      raise
    fail(flag_error_message(e, argv))


_HELP_FLAGS = ('--help', '-help', '-h', '-?', '--helpshort', '--helpfull', '--helpxml')
# A study config nests the training config under this key (`--config.train.batch_size=64`).
_NESTED_TRAIN = 'train.'


def check_config_overrides(argv: list[str]) -> None:
  """Checks each `--config.KEY=VALUE` whose KEY the schema declares: the value must parse.

  Keys the schema does not declare (a study's own keys, or a typo) are left to the config file's
  ConfigDict, whose error `flag_error_message` turns into one line.

  Raises:
    ValueError: one line naming the flag, the key's type and the value given.
  """
  for index, arg in enumerate(argv[1:], start=1):
    if not arg.startswith('--config.'):
      continue
    name, has_value, value = arg[len('--config.'):].partition('=')
    if not has_value:  # absl's '--config.KEY VALUE' form; a bare boolean flag has no value.
      following = argv[index + 1] if index + 1 < len(argv) else None
      if following is None or following.startswith('-'):
        continue
      value = following
    key = schema.BY_NAME.get(schema.canonical(name.removeprefix(_NESTED_TRAIN)))
    if key is not None:
      try:
        config_lib.parse_value(key, value)
      except ValueError as e:
        raise ValueError(f'{arg}: {e}') from None


def flag_error_message(error: BaseException, argv: list[str]) -> str:
  """One actionable line for an error raised while parsing flags (and loading the config)."""
  chain = _exception_chain(error)
  texts = [str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e) for e in chain]
  if any(isinstance(e, (KeyError, AttributeError)) for e in chain):
    root = texts[-1]
    if root.startswith('Unknown config key'):  # The config builder's own message.
      return root
    # ConfigDict names the missing key (in quotes, with its own suggestion text): take the
    # override flag that holds it and suggest from the schema.
    key = _unknown_override(argv, chain)
    close = config_lib.closest_key(key.removeprefix(_NESTED_TRAIN)) if key else None
    if close and key.startswith(_NESTED_TRAIN):
      close = _NESTED_TRAIN + close
    hint = (f'did you mean {close!r}?' if close else
            'the keys are those of efficientnet_jax/schema.py and the config file.')
    shown = key if key else root.strip('\'"')
    return f'unknown config key {shown!r} in {_override_flag(argv, shown)}; {hint}'
  if isinstance(chain[-1], OSError) or 'earlier failure to load' in texts[0]:
    reason = [line.strip() for line in texts[0].splitlines() if line.strip()][-1]
    return f'cannot load the config file of --config: {reason}'
  flag = re.match(r'flag (--\S+?): ', texts[0])
  reason = _expected_type(_last_line(texts[-1]))
  if flag and len(chain) > 1:
    return f'{flag.group(1)}: {reason}'
  if flag and reason.startswith(flag.group(0)):
    return reason[len('flag '):]
  return f'{reason} (see --help)' if isinstance(error, flags.Error) else reason


def _unknown_override(argv: list[str], chain: list[BaseException]) -> str | None:
  """The `--config.NAME` override whose NAME is neither declared nor in the config file."""
  for arg in argv[1:]:
    if not arg.startswith('--config.'):
      continue
    name = arg[len('--config.'):].partition('=')[0]
    if schema.canonical(name.removeprefix(_NESTED_TRAIN)) in schema.BY_NAME:
      continue
    if any(name.split('.')[-1] in str(e) for e in chain):
      return name
  return None


# Python's conversion errors, reworded as what the value should be.
_CONVERSION_ERRORS = (
    (r"could not convert string to float: (.*)", 'expected a number, got {}'),
    (r"invalid literal for int\(\) with base \d+: (.*)", 'expected an integer, got {}'),
    (r"\('Non-boolean argument to boolean flag', (.*)\)", 'expected true or false, got {}'),
)


def _expected_type(reason: str) -> str:
  for pattern, template in _CONVERSION_ERRORS:
    match = re.fullmatch(pattern, reason)
    if match:
      return template.format(match.group(1))
  return reason


def _exception_chain(error: BaseException) -> list[BaseException]:
  """`error`, then what caused it (explicitly or while handling it), down to the root."""
  chain = [error]
  while (cause := chain[-1].__cause__ or chain[-1].__context__) and cause not in chain:
    chain.append(cause)
  return chain


def _override_flag(argv: list[str], key: str) -> str:
  for arg in argv:
    if arg.startswith('--') and key in arg.split('=', 1)[0]:
      return arg
  return f'--config.{key}'


def _last_line(text: str) -> str:
  lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
  return lines[-1] if lines else text
