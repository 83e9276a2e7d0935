"""Post-hoc analyses: commands that reopen a recorded run — its config, data splits, probe set and
models (:class:`engine.run_inputs.RunInputs`) and its checkpoints — and write a result file under
RUN/analyses/ that the report, the figures and the app read by its declaration: loss barriers
(`barrier`, with `interpolation`), module criticality (`criticality`), UMAP maps (`feature_umap`) and
shared invariance (`invariance`, the command half of :mod:`engine.analyses.invariance`).

They live apart from :mod:`engine.analyses`, whose epoch parts are discovered by importing every
module there (:mod:`engine.analyses.parts`): a post-hoc command imports the run's settings and inputs,
which themselves ask the parts for their defaults, so keeping the two apart keeps that import from
running back up.
"""
