"""The quality gate as an Apache Flink job (PyFlink). See docs/flink.md.

`qaloop.flink.core` is the job's pure part (no PyFlink import: the main venv tests it);
`qaloop.flink.job` builds and runs the job and needs PyFlink (the `.venv-flink` venv).
"""
