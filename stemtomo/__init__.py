"""stemtomo: clean 3D tomograms from noisy STEM tilt series.

The package is a library first: every command of the ``stemtomo`` CLI is a thin wrapper around functions
reachable from Python. Subpackages:

- :mod:`stemtomo.io`        MRC/TIFF stacks and volumes, angle files, extended headers, YAML sidecars
- :mod:`stemtomo.core`      geometry, projector/back-projector, image formation, fields, samplers (tensors only)
- :mod:`stemtomo.simulate`  phantoms, defocus blur, parametric noise
- :mod:`stemtomo.noise`     noise models (normalizing flow, Gaussian, Poisson), fitting, divergence metrics
- :mod:`stemtomo.recon`     WBP/SIRT and the implicit reconstruction
- :mod:`stemtomo.denoise`   BM3D and simple filters
- :mod:`stemtomo.eval`      metrics, FSC, 2D test-projection protocol
"""

from stemtomo.errors import StemtomoError

__version__ = "0.1.0"

__all__ = ["StemtomoError", "__version__"]
