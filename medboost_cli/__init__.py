"""medboost: does a frozen language-model layer boost biomedical image classifiers?

The package is in layers, each importing only those below it: the command line (``cli``); studies, launchers and
reports; training (``engine``); recipes and results (with ``compat``, which keeps old run files and run ids
valid); models, where backbones, LM layers and whole-model families are registries of one module per entry
(``models.backbones``, ``models.lm``, ``models.families``); data and basics. The documentation's development
page maps every module.
"""

__version__ = "0.1.0"
