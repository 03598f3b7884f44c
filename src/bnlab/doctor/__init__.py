"""bnlab.doctor: "why is batch normalization reducing my accuracy?" — measured, not guessed.

``examine(model, data)`` measures a trained model's BN layers (inference vs training
mode accuracy; per layer the exact population statistics of its input vs the stored
moving statistics, update steps vs what the momentum needs, batch noise, dead and
constant channels, non-finite values; the model's structure and modes) and returns a
:class:`Diagnosis` with ranked findings, each with its evidence and remedy.
``treat(model, data, "recalibrate")`` fixes what needs no retraining and measures again.
``examine_run(run_dir, variant=..., seed=...)`` does both for a model the lab trained
(``bnlab doctor RUN_DIR``), ``examine_model_file(path, data)`` for a Keras model file
(``bnlab doctor MODEL.keras --data DATA``; see :mod:`bnlab.doctor.inputs` for DATA).

Example::

    from bnlab.doctor import examine, render, to_json, treat

    diagnosis = examine(model, dataset, train_batch_size=32)   # a bnlab Dataset
    render(diagnosis)                          # tables on the terminal
    diagnosis.codes()                          # ['stale_statistics', ...]
    treatment = treat(model, dataset, "recalibrate", train_batch_size=32)
    treatment.gap_closed                       # fraction of the accuracy gap closed
    print(to_json(treatment))
"""

from bnlab.doctor.examine import SCHEMA, Diagnosis, examine
from bnlab.doctor.findings import RULES, SEVERITIES, Finding, list_rules
from bnlab.doctor.fix import FIXES, Treatment, list_fixes, treat
from bnlab.doctor.inputs import ModelInterface, resolve_data
from bnlab.doctor.measure import LayerMeasurement, Measurements, Metrics, fade_steps, momentum_for
from bnlab.doctor.model_file import examine_model_file, training_record
from bnlab.doctor.render import render, to_json
from bnlab.doctor.run import DoctorError, examine_run

__all__ = [
    "FIXES",
    "RULES",
    "SCHEMA",
    "SEVERITIES",
    "Diagnosis",
    "DoctorError",
    "Finding",
    "LayerMeasurement",
    "Measurements",
    "Metrics",
    "ModelInterface",
    "Treatment",
    "examine",
    "examine_model_file",
    "examine_run",
    "fade_steps",
    "list_fixes",
    "list_rules",
    "momentum_for",
    "render",
    "resolve_data",
    "to_json",
    "training_record",
    "treat",
]
