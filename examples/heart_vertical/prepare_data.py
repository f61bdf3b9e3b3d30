"""Split the heart disease patients (all four hospitals' 920 rows, UCI) by columns between a
hospital and a laboratory that share most, not all, patients:

- hospital.csv: patient_id, age, sex, cp (chest pain type), trestbps (resting blood
  pressure), fbs (fasting blood sugar > 120) and the outcome num (angiographic disease grade);
  patients P-00000 .. P-00827 (90 %);
- laboratory.csv: patient_id, chol (serum cholesterol), restecg (resting ECG), thalach
  (maximum heart rate in the stress test), exang (exercise-induced angina), oldpeak (ST
  depression in the stress test); patients P-00092 .. P-00919 (90 %), in another order.

736 patients are in both. Written once into data/ (shipped); rerun to regenerate.

    python examples/heart_vertical/prepare_data.py
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
HEART = HERE.parent / "heart_disease" / "data"
COLUMNS = ["age", "sex", "cp", "trestbps", "chol", "fbs", "restecg", "thalach", "exang",
           "oldpeak", "slope", "ca", "thal", "num"]
FILES = ["cleveland", "hungarian", "switzerland", "va"]
HOSPITAL = ["age", "sex", "cp", "trestbps", "fbs", "num"]
LABORATORY = ["chol", "restecg", "thalach", "exang", "oldpeak"]


def main() -> None:
    frames = [pd.read_csv(HEART / f"processed.{f}.data", header=None, names=COLUMNS,
                          na_values=["?"]) for f in FILES]
    patients = pd.concat(frames, ignore_index=True)
    patients.insert(0, "patient_id", [f"P-{i:05d}" for i in range(len(patients))])
    n = len(patients)
    cut = n // 10
    hospital = patients.iloc[: n - cut][["patient_id", *HOSPITAL]]
    lab = patients.iloc[cut:][["patient_id", *LABORATORY]]
    lab = lab.sample(frac=1.0, random_state=np.random.RandomState(0))
    (HERE / "data").mkdir(exist_ok=True)
    hospital.to_csv(HERE / "data" / "hospital.csv", index=False)
    lab.to_csv(HERE / "data" / "laboratory.csv", index=False)
    print(f"hospital: {len(hospital)} patients, laboratory: {len(lab)}, shared: "
          f"{len(set(hospital.patient_id) & set(lab.patient_id))}")


if __name__ == "__main__":
    main()
