"""Federated learning: FedAvg with Flower's simulation engine, audited for membership and source leakage.

- :mod:`.simulation`: federations run by Flower (``flwr``, Ray backend); the server's recorded view.
- :mod:`.local`: one client's local training with the classifier zoo and the defenses' plugins.
- :mod:`.partition`: IID, Dirichlet label-skew and shard partitions of the clients' data.
- :mod:`.source_inference`: Hu et al.'s (ICDM 2021) prediction-loss source inference attack.
- :mod:`.privacy`: DP-FedAvg (Flower's server-side wrapper) and epsilon accounting across rounds.
- :mod:`.audit`: the audit kind ``federated`` (``miaudit audit`` with ``kind: federated``).

Flower and Ray are imported only when a federation runs (``pip install 'miaudit[federated]'``).
"""
