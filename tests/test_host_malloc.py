"""The host allocator choice (`efficientnet_jax.host_malloc`): the rule, the entry points, the re-exec."""

import os
import subprocess
import sys
import textwrap

import pytest

from efficientnet_jax import host_malloc
from efficientnet_jax.errors import UsageError

LIB = 'libtcmalloc_minimal.so.4'


def choose(environ, *, installed=True, accelerator=False, exists=lambda p: True):
  return host_malloc.choose(environ, find=lambda: LIB if installed else None,
                            accelerator=lambda: accelerator, exists=exists)


def test_auto_preloads_an_installed_tcmalloc_on_a_cpu_host():
  assert choose({}).library == LIB
  assert choose({host_malloc.ENV: 'auto'}).library == LIB
  assert choose({host_malloc.ENV: 'tcmalloc'}, accelerator=True).library == LIB


def test_auto_keeps_the_process_as_it_is_when_it_should():
  missing = choose({}, installed=False)
  assert missing.library is None and 'apt-get install libtcmalloc-minimal4' in missing.reason
  assert choose({}, accelerator=True).library is None
  users = choose({'LD_PRELOAD': '/opt/mylib.so'})
  assert users.library is None and '/opt/mylib.so' in users.reason
  assert choose({host_malloc.ENV: 'system'}).library is None


def test_a_library_path_is_taken_as_given_and_checked():
  path = '/usr/lib/libjemalloc.so.2'
  assert choose({host_malloc.ENV: path}, installed=False).library == path
  with pytest.raises(UsageError, match='does not exist'):
    choose({host_malloc.ENV: path}, exists=lambda p: False)


@pytest.mark.parametrize('value, message', [('bogus', 'is not one of auto, tcmalloc, system'),
                                            ('tcmalloc', 'no tcmalloc is installed')])
def test_bad_choices_are_one_line_usage_errors(value, message):
  with pytest.raises(UsageError, match=message) as e:
    choose({host_malloc.ENV: value}, installed=False)
  assert '\n' not in str(e.value)


def test_accelerator_detection_trusts_jax_platforms_first():
  present = lambda path: path == '/dev/nvidiactl'
  assert host_malloc.has_accelerator(present, {})
  assert not host_malloc.has_accelerator(present, {'JAX_PLATFORMS': 'cpu'})
  assert host_malloc.has_accelerator(lambda p: False, {'JAX_PLATFORMS': 'cuda,cpu'})
  assert not host_malloc.has_accelerator(lambda p: False, {})


def test_the_chosen_library_is_preloaded_first():
  assert host_malloc.preload_list(LIB, '') == LIB
  assert host_malloc.preload_list(LIB, f'/a.so:{LIB} /b.so') == f'{LIB} /a.so /b.so'


@pytest.mark.parametrize('argv, orig, main, expected', [
    (['-m'], ['python', '-m', 'efficientnet_jax.main', '--config=x'], {}, True),
    (['-m'], ['python', '-u', '-X', 'importtime', '-m', 'efficientnet_jax.benchmark'], {}, True),
    (['-m'], ['python', '-mefficientnet_jax.evaluate'], {}, True),
    (['-m'], ['python', '-m', 'efficientnet_jax.summary'], {}, False),
    (['-m'], ['python', '-m', 'pytest', 'tests'], {}, False),
    (['experiments/launch.py'], ['python', 'experiments/launch.py'], {}, False),
    (['experiments/x.py'], ['python', 'experiments/x.py'],
     {host_malloc.SCRIPT_MARKER: True}, True),
])
def test_entry_points(argv, orig, main, expected):
  assert host_malloc.entry_point(argv, orig, main) is expected


def test_in_use_reads_the_process_maps(tmp_path):
  maps = tmp_path / 'maps'
  maps.write_text('7f00-7f10 r-xp 0 08:01 1 /usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4\n')
  assert host_malloc.in_use(str(maps)) == 'tcmalloc'
  maps.write_text('7f00-7f10 r-xp 0 08:01 1 /usr/lib/x86_64-linux-gnu/libc.so.6\n')
  assert host_malloc.in_use(str(maps)) == 'system'
  assert host_malloc.in_use(str(tmp_path / 'absent')) == 'unknown'


def _unmapped_glibc_library() -> str:
  """A library of the C library's own that this process has not mapped: harmless to preload."""
  with open('/proc/self/maps', encoding='utf-8') as f:
    maps = f.read()
  libc = next(line.split()[-1] for line in maps.splitlines()
              if os.path.basename(line.split()[-1]).startswith('libc.so'))
  for name in ('libBrokenLocale.so.1', 'libanl.so.1', 'libutil.so.1'):
    path = os.path.join(os.path.dirname(libc), name)
    if os.path.exists(path) and path not in maps:
      return path
  pytest.fail(f'no unmapped glibc library beside {libc}')


@pytest.mark.skipif(not sys.platform.startswith('linux'), reason='LD_PRELOAD is Linux-only')
def test_an_entry_script_reexecutes_once_with_the_library_preloaded(tmp_path):
  # Any library shows the mechanism; one that Python and JAX never map shows the preload.
  library = _unmapped_glibc_library()
  script = tmp_path / 'entry.py'
  body = textwrap.dedent(f"""
      import os, sys
      print('start', flush=True)
      {{marker}}
      import efficientnet_jax
      with open('/proc/self/maps') as f:
        mapped = {library!r} in f.read()
      print(os.environ.get('LD_PRELOAD', ''), os.environ.get({host_malloc.REEXECUTED_ENV!r}),
            mapped, sys.argv[1:])
      sys.exit(7)
  """)
  env = {k: v for k, v in os.environ.items()
         if k not in ('LD_PRELOAD', host_malloc.REEXECUTED_ENV)}
  env[host_malloc.ENV] = library

  def run(marker: str) -> subprocess.CompletedProcess:
    script.write_text(body.replace('{marker}', marker))
    return subprocess.run([sys.executable, str(script), '--flag=1'], env=env,
                          capture_output=True, text=True, timeout=120, check=False)

  entry = run(f'{host_malloc.SCRIPT_MARKER} = True')
  assert entry.returncode == 7, entry.stderr  # The re-executed process's exit code.
  # The code before the import runs twice, the rest once, in the preloaded process.
  assert entry.stdout.splitlines() == [
      'start', 'start', f"{library} {library} True ['--flag=1']"], entry.stdout
  other = run('')
  assert other.returncode == 7 and other.stdout.splitlines() == [
      'start', " None False ['--flag=1']"], other.stdout
