"""The training loss: config (:mod:`.config`, no torch) and modules (:mod:`.compound`).

Kept free of imports on purpose: the config loader imports ``dotseg.losses.config`` and must not
pull torch in with it.
"""
