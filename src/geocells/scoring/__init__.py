"""geocells.scoring: the numpy maths every stage scores with (no torch, only ``geo`` below).

``upsample`` (prototypes from level Lp to Lc), ``exact`` (top-k of ``sim_A + κ · sim_P``,
one tie rule), ``memmap`` (page-cache hints for memory-mapped codes), ``metrics``
(recall, errors, ranks), ``kappa`` (the κ sweep and its selection), ``confidence`` (the
calibrated probability of an answer). Training's validation, calibration, eval, search
and the benchmarks all call these, so the number chosen on val is the number served.
"""
