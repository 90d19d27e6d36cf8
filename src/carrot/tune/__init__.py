"""``carrot tune``: an equal-budget hyperparameter search of several methods, on Optuna.

One Optuna study per method, the same sampler seed and the same number of trials for each;
every trial a real training run scored on the validation split. The search spaces are declared
by the methods themselves (``Method.search_space``, in :mod:`carrot.tune.space`'s terms) plus
the shared training settings of :data:`carrot.tune.space.SHARED_SPACE`. See docs/tuning.md.

Importing this package (and :mod:`carrot.tune.space`) does not import Optuna; the modules that
run a search do (``pip install 'carrot-fgvc[tune]'``).
"""
