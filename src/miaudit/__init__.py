"""miaudit: was this record used to train this model?

Membership inference attacks, defenses and audits for classifiers, language models and encoders.
Every attack score follows one convention: higher = more likely a member.
"""

from miaudit.errors import MiauditError

__version__ = "0.1.0"
__all__ = ["MiauditError", "__version__"]
