"""Adapters for libraries carrot does not depend on, one module per library.

Each module imports its library lazily and raises an ``ImportError`` naming the extra to install
when it is missing; importing :mod:`carrot` or this package never imports any of them.

- :mod:`carrot.integrations.pml`: any pytorch-metric-learning loss on the CARROT view
  (``pip install 'carrot-fgvc[pml]'``).
- :mod:`carrot.integrations.statsmodels`, :mod:`carrot.integrations.scikit_posthocs` and
  :mod:`carrot.integrations.baycomp`: the statistics of ``carrot bench accuracy`` (Holm, TOST,
  power, Nemenyi, the CD diagram, the Bayesian signed-rank test; ``pip install 'carrot-fgvc[bench]'``).
"""
