"""``calibration.json``: what ``vstain calibrate`` learned, tied to the bundles it was made for.

A :class:`Calibration` holds, for one magnification and one miscoverage level α:

* per feature of the evaluation pipeline (the 99 per-field columns of src/vstain/evaluation/columns.py):
  the conformal quantile ``q`` of the normalised scores, the σ floor, how many calibration fields
  had a value (and which did not, under the evaluation's NaN policy);
* per stain: the risk-control multiplier ``lambda`` of the pixel intervals and the pixel floor;
* the SHA-256 of each stain's model bundle, the TTA setting that made the spreads and the tiler's
  margin (src/vstain/inference/tiler.py) the predictions were made with.

It is plain JSON validated by pydantic (no pickling); :meth:`Calibration.check_matches` refuses,
in one line, to apply it to other bundles, another magnification or another α.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Literal, Mapping

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from vstain.atomic import write_text_atomic
from vstain.errors import VstainError
from vstain.vocabulary import MAGNIFICATIONS, TARGETS

CALIBRATION_FORMAT = "vstain-calibration"
CALIBRATION_FORMAT_VERSION = 1

#: How non-finite feature values are treated, written into every calibration.json.
NAN_POLICY: dict[str, str] = {
    "nonfinite_truth": "a calibration field whose feature is NaN or infinite on the real stains (e.g. a mean "
    "over zero objects) gives no score for that feature; the feature is calibrated on the other fields "
    "(n, skipped_fields), as the evaluation skips such entries",
    "nonfinite_prediction": "a feature that is NaN on the prediction counts as 0, as in the evaluation's "
    "featurewise metric; the TTA spread of a feature uses the variants where it is finite",
    "too_few_values": "a feature with fewer usable calibration fields than the level needs gets no interval "
    "(quantile null, with the reason); its intervals are written as NaN",
}


class CalibrationError(VstainError, ValueError):
    """A calibration file that cannot be read or does not fit the models / plate / level asked for."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FeatureCalibration(_Strict):
    """One feature: ``interval = prediction ± quantile · max(σ_TTA, floor)``."""

    quantile: float | None
    floor: float
    n: int
    skipped_fields: list[str] = []
    reason: str | None = None


class PixelCalibration(_Strict):
    """One stain: ``interval = prediction ± lambda · max(spread, floor)`` per pixel (stain counts)."""

    multiplier: float
    floor: float
    n: int
    calibration_risk: float


class Calibration(_Strict):
    """The content of ``calibration.json`` (see the module docstring)."""

    format: Literal["vstain-calibration"] = CALIBRATION_FORMAT
    format_version: int = CALIBRATION_FORMAT_VERSION
    alpha: float
    magnification: str
    bundles: dict[str, str]
    tta: int
    #: Pixels of brightfield the tiler reflected around each field while calibrating
    #: (src/vstain/inference/tiler.py); intervals predict with the same. Files written before it was
    #: recorded were made without one.
    margin: int = Field(0, ge=0)
    fields: list[str]
    features: dict[str, FeatureCalibration]
    pixels: dict[str, PixelCalibration]
    nan_policy: dict[str, str] = NAN_POLICY
    vstain_version: str = ""
    created: str = ""

    @field_validator("magnification")
    @classmethod
    def _known_magnification(cls, value: str) -> str:
        if value not in MAGNIFICATIONS:
            raise ValueError(f"unknown magnification; expected one of {', '.join(MAGNIFICATIONS)}")
        return value

    @field_validator("bundles", "pixels")
    @classmethod
    def _known_targets(cls, value: Mapping[str, Any]) -> Mapping[str, Any]:
        unknown = [t for t in value if t not in TARGETS]
        if unknown:
            raise ValueError(f"unknown stain {unknown[0]!r}; expected {', '.join(TARGETS)}")
        return value

    def check_matches(self, bundles: Mapping[str, str], *, magnification: str, alpha: float | None = None,
                      source: str | os.PathLike[str] = "calibration.json") -> None:
        """Refuse (one line) a calibration made for other bundles, magnification or α.

        Parameters
        ----------
        bundles
            ``{target: sha256}`` of the bundles about to predict.
        magnification
            The fields' magnification.
        alpha
            The level the user asked for (None: take the file's).
        """
        if magnification != self.magnification:
            raise CalibrationError(f"{source}: made for {self.magnification} fields, not {magnification}; "
                                   f"calibrate the {magnification} models (vstain calibrate)")
        if alpha is not None and not math.isclose(alpha, self.alpha, rel_tol=0, abs_tol=1e-12):
            raise CalibrationError(f"{source}: made for alpha {self.alpha}, not {alpha}; "
                                   f"run vstain calibrate --alpha {alpha}")
        for target, digest in sorted(bundles.items(), key=lambda item: TARGETS.index(item[0])):
            made = self.bundles.get(target)
            if made is None:
                raise CalibrationError(f"{source}: has no calibration for {target}; calibrate with that model")
            if made != digest:
                raise CalibrationError(f"{source}: made for another {target} model (sha256 {made[:12]}…, "
                                       f"given {digest[:12]}…); calibrate these models (vstain calibrate)")

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write atomically as strict JSON (NaN never appears: missing quantiles are null)."""
        return write_text_atomic(path, json.dumps(self.model_dump(mode="json"), indent=2, allow_nan=False) + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> "Calibration":
        """Read and validate; every problem is one :class:`CalibrationError` line naming the file."""
        from vstain.config import validation_message

        path = Path(path)
        try:
            data = json.loads(path.read_text("utf-8"))
        except FileNotFoundError:
            raise CalibrationError(f"{path}: no such calibration file (make one with vstain calibrate)") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise CalibrationError(f"{path}: not a readable calibration.json ({exc})") from None
        if not isinstance(data, dict) or data.get("format") != CALIBRATION_FORMAT:
            raise CalibrationError(f"{path}: not a vstain calibration file (no \"format\": \"{CALIBRATION_FORMAT}\")")
        if data.get("format_version") != CALIBRATION_FORMAT_VERSION:
            raise CalibrationError(f"{path}: calibration format version {data.get('format_version')!r}; this "
                                   f"vstain reads {CALIBRATION_FORMAT_VERSION}: calibrate again")
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise CalibrationError(f"{path}: {validation_message(exc)}") from None
