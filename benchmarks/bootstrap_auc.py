"""Speed of the paired bootstrap's weighted AUC at a large test set (prints the time; nothing asserted).

R=2000 bootstrap replicates of N=20,000 samples with K=11 classes (OrganAMNIST's test split is 17,778 images),
the worst case `medboost report` meets in the paper's tables.
"""

from medboost_cli import stats

if __name__ == "__main__":
    stats.benchmark()
