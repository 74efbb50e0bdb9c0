"""Pretrained weights: the converted-weights format, `load_pretrained` and the converters.

  pretrained.py  DIR/meta.json + DIR/variables/ (orbax), `load_pretrained`
  converters/    one module per source: timm, efficientnet_pytorch, keras
"""
