"""The federated-learning kind: audit kind ``federated`` (FedAvg under Flower's simulation engine, the classifier
attacks on the global model per round, source inference, client-side and server-side DP); loaded by
:mod:`miaudit.kinds`. It adds no attacks of its own to the registry: source inference is not a membership attack.
"""

import miaudit.federated.audit  # noqa: F401  (registers the audit kind)
