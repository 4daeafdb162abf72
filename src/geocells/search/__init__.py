"""geocells.search: top-k cells of ``sim_A + κ · sim_P``: one exact search, IVF-PQ + re-rank."""
