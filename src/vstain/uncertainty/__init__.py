"""Calibrated uncertainty: conformal intervals for virtual stains and their features (docs/uncertainty.md).

* :mod:`~vstain.uncertainty.conformal` — the math (split conformal quantiles, conformal risk
  control), plain numpy;
* :mod:`~vstain.uncertainty.calibration` — ``calibration.json`` (schema, load, checks);
* :mod:`~vstain.uncertainty.variants` — measuring a field's TTA variants;
* :mod:`~vstain.uncertainty.calibrate` — ``vstain calibrate``;
* :mod:`~vstain.uncertainty.intervals` — ``vstain predict --calibration``.

Coverage on fields with real stains is measured by ``vstain evaluate``
(src/vstain/evaluation/coverage.py).
"""
