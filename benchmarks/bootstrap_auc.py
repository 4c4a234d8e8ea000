"""Speed of the paired bootstrap's weighted AUC at a large test set (prints the time; nothing asserted).

R=2000 bootstrap replicates of N=20,000 samples with K=11 classes (OrganAMNIST's test split is 17,778 images),
the worst case `medboost report` meets in the paper's tables.
"""

import time

import numpy as np

from medboost_cli.stats import weighted_auc


def bootstrap_auc_seconds(n: int = 20_000, k: int = 11, r: int = 2_000, seed: int = 0) -> float:
    """Seconds for one ``weighted_auc`` over ``r`` bootstrap replicates of ``n`` multi-class samples."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, k, size=(n, 1))
    scores = rng.dirichlet(np.ones(k), size=n).round(3)  # rounded, so there are ties
    weights = np.empty((r, n), dtype=np.uint16)  # bootstrap multiplicities, 80 MB at the default size
    for row in weights:
        row[:] = np.bincount(rng.integers(0, n, n), minlength=n)
    start = time.perf_counter()
    weighted_auc(labels, scores, "multi-class", weights)
    return time.perf_counter() - start


if __name__ == "__main__":
    n, k, r = 20_000, 11, 2_000
    print(f"weighted_auc: R={r}, N={n}, K={k}: {bootstrap_auc_seconds(n, k, r):.2f} s")
