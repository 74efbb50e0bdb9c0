"""benchmarks/cpu_profile.py: op_names grouped by network part and direction; a tiny real run."""

import os
import subprocess
import sys

SCRIPT = os.path.join(os.path.dirname(__file__), '..', '..', 'benchmarks', 'cpu_profile.py')
sys.path.insert(0, os.path.dirname(SCRIPT))
import cpu_profile  # pylint: disable=g-import-not-at-top,wrong-import-position

_HLO = '''
ENTRY %main.1 (p: f32[8]) -> f32[8] {
  %fusion.3 = f32[8]{0} fusion(%p), kind=kLoop, calls=%f3, metadata={op_name="jit(train_step)/transpose(jvp(EfficientNet))/blocks_2/depthwise_bn/add_any" source_file="x.py"}
  %ynn_fusion.1 = f32[8]{0} fusion(%p), kind=kCustom, metadata={op_name="jit(train_step)/jvp(EfficientNet)/blocks_0/depthwise_conv/mul"}
  ROOT %wrapped_add.2 = f32[8]{0} fusion(%p), metadata={op_name="jit(train_step)/optimizer/add"}
  %copy.4 = f32[8]{0} copy(%p)
}
'''


def test_op_names_maps_instructions_with_metadata_only():
  names = cpu_profile.op_names(_HLO)
  assert set(names) == {'fusion.3', 'ynn_fusion.1', 'wrapped_add.2'}
  assert names['wrapped_add.2'] == 'jit(train_step)/optimizer/add'


def test_groups_and_directions():
  g, d = cpu_profile.group_of, cpu_profile.direction_of
  bn = 'jit(train_step)/transpose(jvp(EfficientNet))/blocks_2/depthwise_bn/add_any'
  assert (g(bn), d(bn)) == ('batch norm', 'backward')
  dw = 'jit(train_step)/jvp(EfficientNet)/blocks_0/depthwise_conv/mul'
  assert (g(dw), d(dw)) == ('depthwise conv', 'forward')
  se = 'jit(train_step)/jvp(EfficientNet)/blocks_1/se/jit(silu)/mul'
  assert g(se) == 'squeeze-excite'  # SE's own SiLU is SE's.
  assert g('jit(train_step)/jvp(EfficientNet)/blocks_1/jit(silu)/mul') == 'SiLU'
  assert g('jit(train_step)/jvp(EfficientNet)/blocks_1/project_conv/dot') == (
      '1×1 convs (expand, project, head)')
  opt = 'jit(train_step)/optimizer/add'
  assert (g(opt), d(opt)) == ('optimizer update', 'update')
  assert g('jit(train_step)/ema/mul') == 'EMA update'
  assert g('jit(train_step)/add') == 'other (step)'


def test_summarise_divides_by_steps_and_sorts():
  names = cpu_profile.op_names(_HLO)
  groups, top = cpu_profile.summarise(
      {'fusion.3': 3000.0, 'ynn_fusion.1': 9000.0, 'wrapped_add.2': 600.0}, names, steps=3)
  assert [(grp, round(total, 6)) for grp, _, total in groups] == [
      ('depthwise conv', 3.0), ('batch norm', 1.0), ('optimizer update', 0.2)]
  assert top[0][0] == 'ynn_fusion.1' and round(top[0][2], 6) == 3.0
  text = cpu_profile.format_tables(groups, top, wall_ms=5.0, header='h', top_n=2)
  assert '| depthwise conv | 3.0 |  |  | 3.0 | 71.4% |' in text


def test_a_tiny_real_run_attributes_most_thunk_time_to_named_groups():
  done = subprocess.run(
      [sys.executable, SCRIPT, '--model=b0', '--phi=-8', '--resolution=16', '--batch=4',
       '--steps=1', '--warmup=1', '--top=3'], capture_output=True, text=True, check=False,
      timeout=600)
  assert done.returncode == 0, done.stderr[-2000:]
  rows = [line for line in done.stdout.splitlines() if line.startswith('| ')
          and '%' in line]
  shares = {line.split(' | ')[0][2:]: float(line.rstrip(' |').split(' | ')[-1][:-1])
            for line in rows}
  assert {'depthwise conv', 'batch norm', 'optimizer update'} <= set(shares)
  assert sum(v for k, v in shares.items() if not k.startswith('other')) > 90


def test_bad_arguments_exit_2():
  done = subprocess.run([sys.executable, SCRIPT, '--steps=0'], capture_output=True, text=True,
                        check=False)
  assert done.returncode == 2 and 'error:' in done.stderr
