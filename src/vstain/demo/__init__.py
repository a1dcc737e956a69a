"""The whole job on a small synthetic plate: synth → train → predict → evaluate → compare.

:func:`run_demo` is what ``vstain demo`` (and ``make demo``) runs. It writes into ``out``::

    plate/                 the synthetic 20x plate (vstain synth)
    split.csv              every field: train | validation | test (docs/splits.md); the training
                           runs read it as it is, so the test fields are never seen by training,
                           not even for checkpoint selection
    runs/<recipe>/         the five training runs (nuclei, lipids_pretrain, lipids_gan,
                           cytoplasm_pretrain, cytoplasm_gan); models are runs/*/model.safetensors
    heldout/20x_images/    the test fields (links to the plate's files): the truth
    predictions/<method>/  uint16 predictions of the test fields: model, mean_image, linear
    evaluation/<method>/   vstain evaluate output per method (features, scores.json, report.html)
    report.html            the model's evaluation report, opening with the model-vs-baselines comparison
    demo-summary.json      scores, timings and paths

The baselines (:mod:`vstain.evaluation.baselines`) are fitted on the train and validation
fields, the same pixels the models could use, and every method is scored on the same test
fields with the same metric.

One module per job: :mod:`~vstain.demo.profiles` (sizes and recipes), :mod:`~vstain.demo.run`
(the stages), :mod:`~vstain.demo.baselines` (the two baselines' predictions) and
:mod:`~vstain.demo.summary` (scores, the terminal table and the report's comparison section).
"""

from __future__ import annotations

from vstain.demo.profiles import PROFILES, DemoProfile
from vstain.demo.run import run_demo
from vstain.demo.summary import SUMMARY_NAME, format_summary

__all__ = ["DemoProfile", "PROFILES", "SUMMARY_NAME", "run_demo", "format_summary"]
