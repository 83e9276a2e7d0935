"""The defaults `ftdyn run`, `ftdyn sweep` and the monitor share, declared once here (torch- and
numpy-free, so the command line declares its options with them at no cost to its start-up)."""

METRICS = ("pwsm", "procrustes", "cka")  # --metrics
INTERVAL_GROUPS = 10  # --interval-groups: jackknife groups of probe images
INTERVAL_LEVEL = 0.90  # --interval-level
