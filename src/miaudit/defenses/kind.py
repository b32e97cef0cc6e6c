"""The one-run DP canary audit (audit kind ``dp_canary``), loaded by :mod:`miaudit.kinds`.

Defenses are applied to classifiers; this package adds no attacks of its own.
"""

import miaudit.defenses.dp_canary
import miaudit.defenses.report  # noqa: F401  (registers the defense-comparison page of report.html)
