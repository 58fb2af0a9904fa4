"""diffsr: diffusion and flow super-resolution for medical, infrared and natural images.

Imports are lazy: ``import diffsr`` loads nothing heavy. Use the subpackages directly::

    from diffsr.codecs import WaveletCodec
    from diffsr.losses import LossStack
"""

__version__ = "0.1.0"
