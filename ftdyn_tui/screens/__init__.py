"""The app's screens, one module each: runs, config, dynamics (curves), filters, results, help.

They draw what the UI-free modules of ftdyn_tui compute (workspace, series, filters, maps, render, host,
transfer); those never import a screen.
"""
