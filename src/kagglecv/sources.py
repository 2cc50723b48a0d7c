"""Where competitions come from. Each source writes a competition folder exactly as Kaggle ships one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

# The digits competition is fixed, like a real one: its test part does not move with `seed`.
DIGITS_SPLIT_SEED = 2012


def write_digits(out_dir: Path, *, test_fraction: float) -> None:
    """scikit-learn's 1,797 8x8 digits laid out as Kaggle's Digit Recognizer, plus `solution.csv`.

    Pixels are rescaled from 0..16 to 0..255 as in MNIST; a stratified `test_fraction` of the
    images forms the test part, whose labels go to `solution.csv` only.
    """
    digits = load_digits()
    pixels = np.rint(digits.data * 255.0 / 16.0).astype(np.int64)  # (N, 64)
    labels = digits.target.astype(np.int64)
    train_x, test_x, train_y, test_y = train_test_split(
        pixels, labels, test_size=test_fraction, stratify=labels, random_state=DIGITS_SPLIT_SEED
    )
    columns = [f"pixel{i}" for i in range(pixels.shape[1])]
    out_dir.mkdir(parents=True, exist_ok=True)
    train = pd.DataFrame(train_x, columns=columns)
    train.insert(0, "label", train_y)
    train.to_csv(out_dir / "train.csv", index=False, lineterminator="\n")
    pd.DataFrame(test_x, columns=columns).to_csv(out_dir / "test.csv", index=False, lineterminator="\n")
    image_ids = np.arange(1, len(test_x) + 1)
    pd.DataFrame({"ImageId": image_ids, "Label": 0}).to_csv(
        out_dir / "sample_submission.csv", index=False, lineterminator="\n"
    )
    pd.DataFrame({"ImageId": image_ids, "Label": test_y}).to_csv(
        out_dir / "solution.csv", index=False, lineterminator="\n"
    )
