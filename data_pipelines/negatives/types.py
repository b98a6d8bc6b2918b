"""The hard-negative types, defined once: every module that makes, reads or scores negatives names them from here.

A negative differs from its caption in one structural way:

* ``reshuffle_order``      two whole noun phrases trade places (determiners and attributes move along)
* ``swap_nouns``           two nouns trade places ("a dog chasing a cat" -> "a cat chasing a dog")
* ``swap_adjectives``      two attributes trade places ("a white cat, a black dog" -> "a black cat, a white dog")
* ``replace_adjectives``   an attribute becomes its opposite or another of its kind (colour, material, size...)
* ``replace_nouns``        a noun becomes another of its kind (an animal another animal)
* ``replace_relation``     a spatial relation becomes its opposite, or an action verb another action

The first five are DeGLA's; relation replacement is ours. Negatives imported from elsewhere (an
LLM's output) without a type are typed ``imported``.
"""

from __future__ import annotations

RESHUFFLE_ORDER = "reshuffle_order"
SWAP_NOUNS = "swap_nouns"
SWAP_ADJECTIVES = "swap_adjectives"
REPLACE_ADJECTIVES = "replace_adjectives"
REPLACE_NOUNS = "replace_nouns"
REPLACE_RELATION = "replace_relation"

# All types, in the order the rule-based generator starts from (before its seeded shuffle).
TYPES: tuple[str, ...] = (
    RESHUFFLE_ORDER,
    SWAP_NOUNS,
    SWAP_ADJECTIVES,
    REPLACE_ADJECTIVES,
    REPLACE_NOUNS,
    REPLACE_RELATION,
)
IMPORTED = "imported"

# SugarCrepe's files (its categories) -> our types that make the same kind of negative, the exact
# counterpart first; the ``add_*`` categories have none.
SUGARCREPE_TYPES: dict[str, tuple[str, ...]] = {
    "swap_att": (SWAP_ADJECTIVES,),
    "swap_obj": (SWAP_NOUNS, RESHUFFLE_ORDER),
    "replace_att": (REPLACE_ADJECTIVES,),
    "replace_obj": (REPLACE_NOUNS,),
    "replace_rel": (REPLACE_RELATION,),
    "add_obj": (),
    "add_att": (),
}
