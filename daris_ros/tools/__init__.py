"""Command-line tools: bag synthesis, replay, record, demo, bench."""
