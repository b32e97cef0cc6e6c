"""Attacks: one score per example, higher = more likely a member.

Sub-packages: ``classifier``, ``llm``, ``encoder``, ``text_generation``. Use
:func:`miaudit.attacks.registry.create_attack` to build one by name.
"""

from miaudit.attacks.base import Attack
from miaudit.attacks.registry import attack_names, create_attack, get_attack_class, list_attacks, register

__all__ = ["Attack", "attack_names", "create_attack", "get_attack_class", "list_attacks", "register"]
