"""Experiments over many runs: sweep grids (`grid`), running them (`sweep`), the paper's reference
numbers (`paper`) and the report over a folder of runs (`results`; tables and plots in `kava.experiments.reports`)."""
