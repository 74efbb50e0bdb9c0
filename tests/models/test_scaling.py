"""Tests for the compound-scaling rules: rounding, block strings, variants, (φ, α, β, γ)."""

import dataclasses

import pytest

from efficientnet_jax.models import scaling

B_NAMES = ('b0', 'b1', 'b2', 'b3', 'b4', 'b5', 'b6', 'b7', 'b8')

# Worked by hand from docs/reference.md §4 (f·w, + 4, floor to a multiple of 8, bump if > 10%
# lost), e.g.
# b5: 32·1.6 = 51.2 → int(55.2) // 8 · 8 = 48 ≥ 0.9·51.2, so 48; l2: 32·4.3 = 137.6 → 136.
EXPECTED_STEMS = (32, 32, 32, 40, 48, 48, 56, 64, 72)
EXPECTED_HEADS = (1280, 1280, 1408, 1536, 1792, 2048, 2304, 2560, 2816)

# Block counts from docs/reference.md §1 (sum of ceil(depth · repeats), Lite keeps stages 1 and 7).
EXPECTED_BLOCKS = {'b0': 16, 'b1': 23, 'b2': 23, 'b3': 26, 'b4': 32, 'b5': 39, 'b6': 45,
                   'b7': 55, 'b8': 61, 'l2': 88, 'lite0': 16, 'lite1': 21, 'lite2': 21,
                   'lite3': 24, 'lite4': 30}


@pytest.mark.parametrize('name, stem, head',
                         list(zip(B_NAMES, EXPECTED_STEMS, EXPECTED_HEADS)))
def test_round_filters_stem_and_head(name, stem, head):
  width = scaling.VARIANTS[name].width
  assert scaling.round_filters(32, width) == stem
  assert scaling.round_filters(1280, width) == head
  spec = scaling.build_network(width, scaling.VARIANTS[name].depth)
  assert (spec.stem_filters, spec.head_filters) == (stem, head)


def test_round_filters_l2():
  assert scaling.round_filters(32, 4.3) == 136
  assert scaling.round_filters(1280, 4.3) == 5504


@pytest.mark.parametrize('filters, width, expected', [
    (32, 1.1, 32),     # 35.2 → 32, within 10%.
    (16, 1.4, 24),     # 22.4 → int(26.4) = 26 → 24.
    (24, 1.4, 32),     # 33.6 → 32.
    (112, 1.4, 160),   # 156.8 → int(160.8) → 160.
    (24, 1.6, 40),     # 38.4 → int(42.4) = 42 → 40.
    (16, 0.1, 8),      # 1.6 → 0, clamped to the minimum of 8.
    (10, 1.0, 16),     # 10 → 8 loses 20% → bumped to 16.
    (18, 1.0, 24),     # 18 → 16 loses 11% → bumped to 24.
    (27, 1.0, 32),     # 27 → 24 loses 11% → 32.
    (356, 0.1, 40),    # 35.6 → 32 < 0.9·35.6 = 32.04 → 40.
    (320, 2.0, 640),
    (45, None, 45),    # No width: unchanged, unrounded.
    (45, 0, 45),
])
def test_round_filters_cases(filters, width, expected):
  assert scaling.round_filters(filters, width) == expected


@pytest.mark.parametrize('repeats, depth, expected', [
    (1, 1.0, 1), (3, 1.0, 3), (1, 1.1, 2), (2, 1.1, 3), (4, 1.2, 5), (3, 1.8, 6),
    (4, 3.1, 13), (2, 5.3, 11), (4, 0.5, 2), (1, 0.3, 1), (3, None, 3),
])
def test_round_repeats(repeats, depth, expected):
  assert scaling.round_repeats(repeats, depth) == expected


@pytest.mark.parametrize('name', scaling.MODEL_NAMES)
def test_block_counts(name):
  v = scaling.VARIANTS[name]
  spec = scaling.build_network(v.width, v.depth, lite=v.lite)
  assert len(spec.blocks) == EXPECTED_BLOCKS[name]
  assert len(spec.stage_of_block) == len(spec.blocks)


def test_b0_network_matches_baseline():
  spec = scaling.build_network(1.0, 1.0)
  stages = [scaling.decode_block_string(s) for s in scaling.B0_BLOCKS]
  blocks_per_stage = [spec.stage_of_block.count(i) for i in range(len(stages))]
  assert blocks_per_stage == [s.num_repeat for s in stages]
  for i, block in enumerate(spec.blocks):
    stage = stages[spec.stage_of_block[i]]
    first = i == 0 or spec.stage_of_block[i - 1] != spec.stage_of_block[i]
    # Only a stage's first block strides and changes width.
    assert block.strides == (stage.strides if first else (1, 1))
    assert block.input_filters == (stage.input_filters if first else stage.output_filters)
    assert block.output_filters == stage.output_filters
    assert block.num_repeat == 1


def test_lite_network():
  spec = scaling.build_network(1.4, 1.8, lite=True)  # lite4
  assert (spec.stem_filters, spec.head_filters) == (32, 1280)
  assert spec.blocks[0].input_filters == 32  # The real stem width, not round_filters(32).
  assert all(b.se_ratio is None for b in spec.blocks)
  # First and last stages keep their single block; the others scale by ceil(1.8 · r).
  per_stage = [spec.stage_of_block.count(i) for i in range(7)]
  assert per_stage == [1, 4, 4, 6, 6, 8, 1]


@pytest.mark.parametrize('block_string', scaling.B0_BLOCKS + (
    'r1_k3_s11_e1_i32_o16_se0.25_noskip',
    'r2_k5_s22_e6_i24_o40',            # No SE.
    'r1_k3_s11_e1_i16_o16_noskip',     # No SE and no skip.
    'r4_k7_s21_e4_i64_o64_se0.5',
))
def test_block_string_round_trip(block_string):
  args = scaling.decode_block_string(block_string)
  assert scaling.encode_block_string(args) == block_string
  assert scaling.decode_block_string(scaling.encode_block_string(args)) == args


def test_block_string_decoded_fields():
  args = scaling.decode_block_string('r3_k5_s22_e6_i40_o80_se0.25_noskip')
  assert args == scaling.BlockArgs(kernel_size=5, num_repeat=3, input_filters=40,
                                   output_filters=80, expand_ratio=6, strides=(2, 2),
                                   se_ratio=0.25, id_skip=False)
  assert scaling.decode_block_string('r1_k3_s11_e1_i32_o16').se_ratio is None


@pytest.mark.parametrize('args', [
    scaling.BlockArgs(3, 1, 32, 16, 1, (1, 1), 0.25, True),
    scaling.BlockArgs(5, 4, 112, 192, 6, (2, 2), None, True),
    scaling.BlockArgs(3, 2, 16, 16, 6, (1, 1), None, False),
])
def test_block_args_round_trip(args):
  assert scaling.decode_block_string(scaling.encode_block_string(args)) == args


@pytest.mark.parametrize('bad', [
    '',
    'r1_k3_s11_e1_i32',                      # Missing o.
    'k3_s11_e1_i32_o16',                     # Missing r.
    'r1_k3_s111_e1_i32_o16',                 # Three stride digits.
    'r1_k3_s11_e1_i32_o16_x5',               # Unknown key.
    'r1_k3_s11_e1_i32_o16_se',               # Key without a value.
    'r1_k3_s11_e1_i32_o16_skip',             # Neither a key nor 'noskip'.
    'rX_k3_s11_e1_i32_o16',                  # Non-numeric value.
    'r1_r2_k3_s11_e1_i32_o16',               # Repeated key.
])
def test_bad_block_strings_raise(bad):
  with pytest.raises(ValueError):
    scaling.decode_block_string(bad)


@pytest.mark.parametrize('phi, width, depth, resolution', [
    (-1, 1 / 1.1, 1 / 1.2, 192),   # 224 / 1.15 = 194.8 → 24.35 · 8 → 192.
    (0, 1.0, 1.0, 224),
    (0.5, 1.0488088, 1.0954451, 240),  # 224 · 1.0724 = 240.2 → 240.
    (1, 1.1, 1.2, 256),            # 257.6 / 8 = 32.2 → 256.
    (3, 1.331, 1.728, 344),        # 224 · 1.5209 = 340.7 / 8 = 42.6 → 344.
])
def test_compound(phi, width, depth, resolution):
  s = scaling.compound(phi)
  assert s.width == pytest.approx(width, rel=1e-6)
  assert s.depth == pytest.approx(depth, rel=1e-6)
  assert s.resolution == resolution
  assert s.resolution % 8 == 0
  assert s.as_overrides() == {'width': s.width, 'depth': s.depth, 'resolution': resolution}


def test_compound_custom_bases():
  s = scaling.compound(2, alpha=1.5, beta=1.2, gamma=1.0, base_resolution=128)
  assert (s.depth, s.width, s.resolution) == (pytest.approx(2.25), pytest.approx(1.44), 128)
  assert scaling.compound(1, gamma=1.01, resolution_multiple=1).resolution == 226  # 226.24.


@pytest.mark.parametrize('kwargs', [
    dict(alpha=0.0), dict(alpha=-1.2), dict(beta=0.0), dict(gamma=-1.15)])
def test_compound_bad_bases_raise(kwargs):
  with pytest.raises(ValueError):
    scaling.compound(1.0, **kwargs)


def test_build_network_bad_coefficients_raise():
  with pytest.raises(ValueError):
    scaling.build_network(0.0, 1.0)
  with pytest.raises(ValueError):
    scaling.build_network(1.0, -1.0)


def test_drop_path_rates_use_total_block_count():
  spec = scaling.build_network(1.4, 1.8)  # b4
  rates = scaling.drop_path_rates(len(spec.blocks), 0.2)
  assert len(rates) == 32
  assert rates[0] == 0.0
  assert rates[1] == pytest.approx(0.2 / 32)
  assert rates[-1] == pytest.approx(0.2 * 31 / 32)


def test_endpoint_blocks_b0():
  spec = scaling.build_network(1.0, 1.0)
  ends = scaling.endpoint_blocks(spec)
  assert list(ends) == [f'reduction_{k}' for k in range(1, 6)]
  assert [spec.blocks[i].output_filters for i in ends.values()] == [16, 24, 40, 112, 320]
  assert ends['reduction_5'] == len(spec.blocks) - 1


def test_get_variant_lists_names():
  with pytest.raises(ValueError) as err:
    scaling.get_variant('b9')
  for name in scaling.MODEL_NAMES:
    assert name in str(err.value)
  assert len(scaling.MODEL_NAMES) == 15
  assert dataclasses.asdict(scaling.get_variant('b4')) == dict(
      width=1.4, depth=1.8, resolution=380, dropout=0.4, lite=False)
