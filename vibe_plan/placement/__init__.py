"""Placement: cost model, lower bounds, baselines (linear, round_robin, eplb), heuristic, CP-SAT."""
