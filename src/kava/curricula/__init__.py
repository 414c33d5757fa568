"""Curricula: methods whose training sequences change as training goes (`base.Curriculum`).

Each module registers its curriculum when imported; a new one is a module and a line here.
"""

from kava.curricula.base import CHOICES, CURRICULA, NONE, Curriculum, StudentStage, lookup, register
from kava.curricula import coconut, icot  # noqa: F401  (each registers its curriculum, in the config's choice order)

__all__ = ["CHOICES", "CURRICULA", "NONE", "Curriculum", "StudentStage", "lookup", "register"]
