"""Patient-level folds: no patient crosses splits, each sample is tested once, labels stay balanced, seeds repeat."""

from __future__ import annotations

import numpy as np
import pytest

from medboost_cli import folds
from medboost_cli.cohort_file import load_cohort
from medboost_cli.dicom import prepare_dicom
from medboost_cli.errors import ConfigError, DataError

from .dicom_fixtures import write_cohort


def cohort_like_the_paper(n_patients: int = 120, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Patients with 1-4 images each, about 63% of them positive (PneumoLLM: 401 of 630), one label per patient."""
    rng = np.random.default_rng(seed)
    counts = rng.integers(1, 5, size=n_patients)
    patient_labels = (rng.random(n_patients) < 0.63).astype(int)
    patients = np.repeat([f"p{i}" for i in range(n_patients)], counts)
    return np.repeat(patient_labels, counts)[:, None], patients


@pytest.mark.parametrize("k", [2, 5])
def test_folds_split_by_patient_and_test_every_sample_once(k):
    labels, patients = cohort_like_the_paper()
    every = folds.patient_folds(labels, patients, k=k, seed=3)
    assert len(every) == k
    tested = np.concatenate([f.test for f in every])
    assert np.array_equal(np.sort(tested), np.arange(len(labels)))  # exactly one test fold per sample
    overall = labels.mean()
    for fold in every:
        parts = [fold.train, fold.val, fold.test]
        assert np.array_equal(np.sort(np.concatenate(parts)), np.arange(len(labels)))  # disjoint, complete
        owners = [set(patients[p]) for p in parts]
        assert not (owners[0] & owners[1] or owners[0] & owners[2] or owners[1] & owners[2])
        assert abs(labels[fold.test].mean() - overall) < 0.1
        assert abs(labels[fold.val].mean() - overall) < 0.15
        assert 0.15 < len(fold.val) / (len(fold.train) + len(fold.val)) < 0.25  # val_fraction 0.2 of training


def test_folds_are_deterministic_per_seed():
    labels, patients = cohort_like_the_paper()
    a, b = folds.patient_folds(labels, patients, 5, seed=7), folds.patient_folds(labels, patients, 5, seed=7)
    other = folds.patient_folds(labels, patients, 5, seed=8)
    for x, y in zip(a, b):
        assert all(np.array_equal(x.split(s), y.split(s)) for s in folds.SPLITS)
    assert any(not np.array_equal(x.test, z.test) for x, z in zip(a, other))


def test_too_few_patients_or_bad_arguments():
    labels, patients = cohort_like_the_paper(n_patients=4)
    with pytest.raises(DataError, match="4 patients are too few for 5 folds"):
        folds.patient_folds(labels, patients, k=5)
    with pytest.raises(ConfigError, match="k=1"):
        folds.patient_folds(labels, patients, k=1)
    with pytest.raises(ConfigError, match="val_fraction=0.7"):
        folds.patient_folds(labels, patients, k=2, val_fraction=0.7)
    labels, patients = cohort_like_the_paper(n_patients=40)
    labels[:] = 0
    labels[patients == patients[0]] = 1  # one positive patient: 4 of 5 test folds would have no positive
    with pytest.raises(DataError, match="no image of label 1"):
        folds.patient_folds(labels, patients, k=5)
    with pytest.raises(DataError, match="training patients, too few"):
        folds.patient_folds(*cohort_like_the_paper(n_patients=8), k=2, val_fraction=0.1)


def test_fold_splits_reads_a_prepared_cohort(tmp_path):
    cohort = write_cohort(tmp_path, n_patients=16, bad_files=False)
    path = prepare_dicom(cohort.folder, cohort.labels_csv, tmp_path / "c.npz", size=16, log=lambda _: None).path
    whole = load_cohort(path)
    seen = []
    for f in range(2):
        splits = folds.fold_splits(path, k=2, fold=f, seed=0, val_fraction=0.25)
        expected = folds.patient_folds(whole.labels, whole.patient_ids, 2, 0, 0.25)[f]
        assert set(splits) == {"train", "val", "test"}
        for name, (images, labels) in splits.items():
            index = expected.split(name)
            assert images.dtype == np.uint8 and images.shape == (len(index), 16, 16)
            assert np.array_equal(images, whole.images[index]) and np.array_equal(labels, whole.labels[index])
            assert set(labels[:, 0]) == {0, 1}
        seen.append(expected.test)
    assert np.array_equal(np.sort(np.concatenate(seen)), np.arange(len(whole)))
    with pytest.raises(ConfigError, match="fold 2: choose 0 to 1"):
        folds.fold_splits(path, k=2, fold=2)
