"""Membership inference attacks on language models; every score is computed from
:class:`~miaudit.llm.signals.TokenSignals` (one forward pass, plus optional extra passes)."""
