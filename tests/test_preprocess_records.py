"""The sidecar records of the three pre-processing steps are plain, YAML-safe Python that round-trips."""

from __future__ import annotations

import numpy as np
import yaml

from stemtomo.preprocess import DefectConfig, estimate_thickness, normalize_tilt_intensities, remove_defects


def test_records_are_yaml_safe(rng: np.random.Generator) -> None:
    stack = rng.poisson(100.0, (3, 24, 24)).astype(np.float32)
    stack[1, 5, 5] = 1e4
    _, defects = remove_defects(stack, DefectConfig(return_coordinates=True))
    _, bf = normalize_tilt_intensities(stack, [-30.0, 0.0, 30.0], "bf")
    vol = 0.01 * rng.standard_normal((16, 12, 12))
    vol[4:10] += rng.random((6, 12, 12))
    thick = estimate_thickness(vol)
    for record in (defects.as_dict(), bf.as_dict(), thick.as_dict()):
        assert yaml.safe_load(yaml.safe_dump(record)) == record
    assert defects.as_dict()["replaced"] == [0, 1, 0]
    assert bf.as_dict()["factors"] == [float(f) for f in bf.factors]
