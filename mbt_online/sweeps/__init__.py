"""Ablation grids: the sweep file, its local run, SLURM job arrays and status."""
