"""Attacks: the interface every attack implements and the registry of all of them.

One score per example, higher = more likely a member. The attacks themselves live with their
model kind (``miaudit.<kind>.attacks``); use :func:`miaudit.attacks.registry.create_attack` to
build one by name.
"""

from miaudit.attacks.base import Attack
from miaudit.attacks.registry import attack_names, create_attack, get_attack_class, list_attacks, register

__all__ = ["Attack", "attack_names", "create_attack", "get_attack_class", "list_attacks", "register"]
