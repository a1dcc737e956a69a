"""Benchmarks, on top of everything else: nothing in vstain imports this package.

* :mod:`~vstain.bench.inference` - seconds per field (three stains), reference tiling vs the fast
  modes, through the engine ``vstain predict`` uses.
* :mod:`~vstain.bench.training` - images/s and peak memory of the real recipe modules
  (``GanModule``, ``LupiModule``, ``RegressionModule``) through their ``training_step``, built
  from the shipped configs.
* :mod:`~vstain.bench.evaluation` - the CellProfiler-equivalent measurements of one synthetic field.
* :mod:`~vstain.bench.run` - ``vstain bench``: runs the chosen sections, prints tables, writes JSON.
* :mod:`~vstain.bench.measure`, :mod:`~vstain.bench.sizes` - how they measure, and at what size.

Each section is one entry of :data:`vstain.bench.run.SECTIONS`; a new benchmark (e.g. prediction
quality) is a new module here plus one entry there, and ``vstain bench <section>`` runs it.
"""
