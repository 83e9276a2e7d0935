"""The `ftdyn` command and its terminal app. Nothing here imports torch at module level, so the
TUI starts fast over SSH; commands that train or measure import the engine when they run."""
