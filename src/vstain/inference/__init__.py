"""Inference: from model bundles and brightfield stacks to fluorescence TIFFs.

* :mod:`~vstain.inference.bundle` - ``*.safetensors`` model bundles (weights + JSON metadata),
  :func:`~vstain.inference.bundle.save_bundle` / :func:`~vstain.inference.bundle.load_model`.
* :mod:`~vstain.inference.tiler` - covering a field: ``reference`` (512/256 pyramid), ``tiles``
  (large tiles, raised-cosine blend), ``whole`` (one pass).
* :mod:`~vstain.inference.engine` - networks x tiler x precision x TTA, out-of-memory fallback.
* :mod:`~vstain.inference.predictor` - :class:`~vstain.inference.predictor.Predictor`: one field,
  or a plate streamed to CV7000-named uint16 TIFFs with a ``predictions.json`` manifest.
* :mod:`~vstain.inference.distributed` - sharding fields across ``torchrun`` ranks.
* :mod:`~vstain.inference.export` - ONNX export checked with onnxruntime.

Submodules are imported on demand (``import vstain.inference`` does not load torch).
"""
