"""Attacks that compare the target with a pool of reference models (``needs_reference="reference-pool"``).

``lira`` (Carlini et al. 2022), ``rmia`` (Zarifzadeh et al. 2024), ``difficulty_calibration``
(Watson et al. 2022) and ``reference_threshold`` (Ye et al. 2022, attack R). The math is in
:mod:`miaudit.attacks.reference.functional` as pure vectorised functions.
"""
