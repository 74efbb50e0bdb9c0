"""Runs a tf.data service dispatcher or worker for `--config.data_service_address`.

  python -m efficientnet_jax.data_service --dispatcher --port=5050
  python -m efficientnet_jax.data_service --worker --dispatcher_address=HOST:5050 --port=5051

then train with `--config.data_service_address=grpc://HOST:5050`: the workers run the train
preprocessing (digits or an image folder; the folder must be readable under the same path on
every worker) and the trainer gets the same batches as locally (`input/data_service.py`).
Start one dispatcher and any number of workers, on any machines; the servers run until killed.
A bad argument is one `error:` line on stderr and exit code 2.

Each server listens on every interface of its machine with no authentication (TensorFlow offers
neither an address to bind nor credentials), and a worker runs any dataset graph it is sent, which
can read and write the worker's files: at start each prints one `warning:` line on stderr saying
so and naming the interfaces. Run them on a trusted private network, behind a firewall or through an
SSH tunnel (docs/security.md).
"""

import socket
import sys

from absl import app
from absl import flags

from efficientnet_jax import cli

FLAGS = flags.FLAGS
flags.DEFINE_bool('dispatcher', False, 'Run the dispatcher.')
flags.DEFINE_bool('worker', False, 'Run a worker.')
flags.DEFINE_integer('port', None, 'Port to serve on (required).')
flags.DEFINE_string('dispatcher_address', None, "The dispatcher's HOST:PORT (--worker only).")
flags.DEFINE_string('worker_address', None,
                    'HOST:PORT under which trainers reach this worker, %port% standing for '
                    '--port (--worker only; default: this machine\'s host name).')


def check_flags() -> None:
  """Raises UsageError unless the flags describe one dispatcher or one worker."""
  if FLAGS.dispatcher == FLAGS.worker:
    raise cli.UsageError('Give exactly one of --dispatcher or --worker.')
  if FLAGS.port is None or not 0 < FLAGS.port < 65536:
    raise cli.UsageError(f'--port={FLAGS.port} must be a port number in 1..65535 (e.g. '
                         '--port=5050).')
  if FLAGS.dispatcher and (FLAGS.dispatcher_address or FLAGS.worker_address):
    raise cli.UsageError('--dispatcher_address and --worker_address are for --worker only.')
  if FLAGS.worker:
    if not FLAGS.dispatcher_address:
      raise cli.UsageError('--worker needs --dispatcher_address=HOST:PORT of the dispatcher.')
    from efficientnet_jax import config as config_lib  # pylint: disable=g-import-not-at-top
    try:
      config_lib.split_data_service_address(FLAGS.dispatcher_address)
    except ValueError:
      raise cli.UsageError(f'--dispatcher_address={FLAGS.dispatcher_address!r} must be '
                           'HOST:PORT (or grpc://HOST:PORT) of the dispatcher.') from None


@cli.run
def main(argv):
  if len(argv) > 1:
    raise cli.UsageError(f'Unexpected arguments {argv[1:]}; options are --flag=value.')
  check_flags()
  cli.quiet_libraries()
  from efficientnet_jax.input import data_service  # pylint: disable=g-import-not-at-top
  if FLAGS.dispatcher:
    server = data_service.start_dispatcher(FLAGS.port)
    print(f'tf.data service dispatcher serving at grpc://{socket.gethostname()}:{FLAGS.port}',
          flush=True)
    print(data_service.exposure_notice('dispatcher', FLAGS.port), file=sys.stderr, flush=True)
  else:
    # TF's default worker address is localhost, which trainers on other machines cannot reach.
    address = FLAGS.worker_address or f'{socket.gethostname()}:%port%'
    server = data_service.start_worker(FLAGS.dispatcher_address, FLAGS.port, address)
    print(f'tf.data service worker serving at {address.replace("%port%", str(FLAGS.port))} '
          f'for dispatcher {FLAGS.dispatcher_address}', flush=True)
    print(data_service.exposure_notice('worker', FLAGS.port), file=sys.stderr, flush=True)
  server.join()


if __name__ == '__main__':
  sys.exit(app.run(main, flags_parser=cli.parse_flags))
