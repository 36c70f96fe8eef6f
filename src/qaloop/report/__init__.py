"""The analysis report and the offline experiments.

- `data`: the inputs (storage through the Repository interface; the optional requests CSV).
- `tables`: pure computation of every table (tested against a known dataset).
- `plots`: matplotlib PNGs (the optional `report` extra); `render`: report.md + report.html.
- `cache_experiment`, `sync_async`: `qaloop experiment cache` and `qaloop experiment sync-vs-async`.
"""
