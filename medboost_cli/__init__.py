"""medboost: does a frozen language-model layer boost biomedical image classifiers?

One module per concern:

* ``cli`` — the thin ``medboost`` command: parses, then calls the functions below;
* ``tasks`` (MedMNIST names and metadata), ``data`` (download, npz loading, batched transforms);
* ``recipes`` (the YAML schema and its layers), ``studies`` (experiments as data, expanded into runs);
* ``models`` — ``backbones`` and ``backbones3d`` produce tokens, ``booster`` wraps them with ``llm``'s frozen
  layer (loaded by ``llm_loading``), and a head reads them;
* ``engine`` (train with validation selection, evaluate), ``seeding`` (every random stream, named),
  ``metrics``, ``results`` (run ids, the results folder, rows);
* ``stats`` (paired bootstrap), ``report`` (tables and figures from the results), ``paper`` (the papers' display names),
  ``gradcam``, ``bench`` (what the booster costs);
* support: ``hardware`` (devices, precision, memory), ``hub`` (offline-aware downloads), ``fileio`` (atomic
  writes), ``progress`` (the terminal display), ``errors``.
"""

__version__ = "0.1.0"
