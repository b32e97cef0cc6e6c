"""Census-like tabular files made offline, in the layout of the UCI Adult files (``adult.data``, ``adult.test``).

Real audits start from files like Adult: no header row, ``", "`` between cells, categorical
columns, ``?`` for missing cells, a test file whose first line is a comment (``|1x3 Cross
validator``) and whose labels carry a trailing dot (``<=50K.``). :func:`write_census_files` writes
such files from a seeded generative model, so examples and tests need no download and a config
written for them reads the real Adult files unchanged (same :data:`COLUMNS`)::

    python -m miaudit.data.census data/census          # data/census/census.data, data/census/census.test

The model: age, education, marital status, occupation, hours per week, capital gain and sex
drive a logistic income score (about 24 % earn ``>50K``, as in Adult); other columns are noise
around them. It is a stand-in with Adult's format and difficulty, not Adult's statistics.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

COLUMNS = ["age", "workclass", "fnlwgt", "education", "education-num", "marital-status", "occupation",
           "relationship", "race", "sex", "capital-gain", "capital-loss", "hours-per-week", "native-country",
           "income"]
CATEGORICAL = ["workclass", "education", "marital-status", "occupation", "relationship", "race", "sex",
               "native-country"]
_EDUCATION = ["Preschool", "1st-4th", "5th-6th", "7th-8th", "9th", "10th", "11th", "12th", "HS-grad",
              "Some-college", "Assoc-voc", "Assoc-acdm", "Bachelors", "Masters", "Prof-school", "Doctorate"]
_EDUCATION_P = [0.002, 0.005, 0.01, 0.02, 0.015, 0.03, 0.035, 0.013, 0.32, 0.22, 0.04, 0.033, 0.165, 0.055,
                0.017, 0.02]
_WORKCLASS = ["Private", "Self-emp-not-inc", "Self-emp-inc", "Federal-gov", "Local-gov", "State-gov"]
_OCCUPATION = ["Prof-specialty", "Craft-repair", "Exec-managerial", "Adm-clerical", "Sales", "Other-service",
               "Machine-op-inspct", "Transport-moving", "Handlers-cleaners", "Farming-fishing", "Tech-support",
               "Protective-serv"]
_OCCUPATION_EFFECT = [0.9, 0.0, 1.1, -0.3, 0.2, -1.2, -0.5, -0.2, -1.0, -0.8, 0.4, 0.3]
_MARITAL = ["Married-civ-spouse", "Never-married", "Divorced", "Separated", "Widowed"]
_MARITAL_P = [0.46, 0.33, 0.14, 0.03, 0.04]
_RACE = ["White", "Black", "Asian-Pac-Islander", "Amer-Indian-Eskimo", "Other"]
_COUNTRY = ["United-States", "Mexico", "Philippines", "Germany", "Canada", "India", "England", "China"]
_MISSING_RATE = 0.04  # workclass, occupation and native-country cells written as "?"


def census_rows(n: int, seed: int) -> list[list[str]]:
    """``n`` rows of the 15 :data:`COLUMNS` as strings (``"?"`` for missing cells), income ``<=50K`` / ``>50K``."""
    rng = np.random.default_rng(seed)
    age = np.clip(rng.gamma(2.8, 7.5, n) + 17, 17, 90).round().astype(int)
    education = rng.choice(len(_EDUCATION), n, p=np.asarray(_EDUCATION_P) / sum(_EDUCATION_P))
    marital = rng.choice(len(_MARITAL), n, p=_MARITAL_P)
    married = marital == 0
    sex_male = rng.random(n) < np.where(married, 0.88, 0.52)
    occupation = np.where(education >= 12, rng.choice([0, 2, 10], n), rng.choice(len(_OCCUPATION), n))
    hours = np.clip(rng.normal(40 + 4 * sex_male + 2 * (education >= 12), 11, n), 1, 99).round().astype(int)
    gain = np.where(rng.random(n) < 0.08 + 0.06 * (education >= 12), rng.lognormal(8.3, 1.0, n), 0).round()
    loss = np.where(rng.random(n) < 0.045, rng.normal(1900, 300, n), 0).clip(0).round()
    score = (-9.0 + 0.045 * np.minimum(age, 60) + 0.32 * education + 1.9 * married + 0.025 * hours
             + np.take(_OCCUPATION_EFFECT, occupation) + 0.35 * sex_male + 1.6 * (gain > 5000)
             + 0.6 * (loss > 1500) + rng.normal(0, 0.9, n))
    rich = rng.random(n) < 1 / (1 + np.exp(-score))
    relationship = np.where(married, np.where(sex_male, "Husband", "Wife"),
                            rng.choice(["Not-in-family", "Own-child", "Unmarried", "Other-relative"], n))
    columns = {
        "age": age.astype(str),
        "workclass": rng.choice(_WORKCLASS, n, p=[0.74, 0.08, 0.04, 0.03, 0.07, 0.04]),
        "fnlwgt": rng.lognormal(12.0, 0.5, n).round().astype(int).astype(str),
        "education": np.take(_EDUCATION, education),
        "education-num": (education + 1).astype(str),
        "marital-status": np.take(_MARITAL, marital),
        "occupation": np.take(_OCCUPATION, occupation),
        "relationship": relationship,
        "race": rng.choice(_RACE, n, p=[0.85, 0.096, 0.032, 0.01, 0.012]),
        "sex": np.where(sex_male, "Male", "Female"),
        "capital-gain": gain.astype(int).astype(str),
        "capital-loss": loss.astype(int).astype(str),
        "hours-per-week": hours.astype(str),
        "native-country": rng.choice(_COUNTRY, n, p=[0.91, 0.025, 0.015, 0.01, 0.01, 0.01, 0.01, 0.01]),
        "income": np.where(rich, ">50K", "<=50K"),
    }
    for name in ("workclass", "occupation", "native-country"):
        columns[name] = np.where(rng.random(n) < _MISSING_RATE, "?", columns[name])
    return [[str(columns[c][i]) for c in COLUMNS] for i in range(n)]


def write_census_files(folder: str | Path, *, n_train: int = 6000, n_test: int = 3000, seed: int = 0
                       ) -> tuple[Path, Path]:
    """Write ``census.data`` (``n_train`` rows) and ``census.test`` (``n_test`` rows) into ``folder`` in Adult's
    layout: no header, ``", "`` separators, ``?`` for missing cells, the test file opened by the comment line
    ``|1x3 Cross validator`` and its labels ending in a dot. Returns both paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rows = census_rows(n_train + n_test, seed)
    train, test = folder / "census.data", folder / "census.test"
    train.write_text("".join(", ".join(r) + "\n" for r in rows[:n_train]) + "\n", encoding="utf-8")
    test.write_text("|1x3 Cross validator\n" + "".join(", ".join(r) + ".\n" for r in rows[n_train:]),
                    encoding="utf-8")
    return train, test


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write census-like files in the layout of UCI Adult.")
    parser.add_argument("folder", help="where census.data and census.test are written")
    parser.add_argument("--train", type=int, default=6000, help="rows of census.data (default 6000)")
    parser.add_argument("--test", type=int, default=3000, help="rows of census.test (default 3000)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    for path in write_census_files(args.folder, n_train=args.train, n_test=args.test, seed=args.seed):
        print(path)


if __name__ == "__main__":
    main()


__all__ = ["CATEGORICAL", "COLUMNS", "census_rows", "write_census_files"]
