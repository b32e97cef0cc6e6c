"""``kind: llm`` audits live in :mod:`miaudit.llm.pipeline`; importing it registers the kind."""

import miaudit.llm.pipeline  # noqa: F401  (registers "llm" with miaudit.audit.pipeline.register_kind)
