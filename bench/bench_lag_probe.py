"""CPU (time.process_time) and wall time of one lag probe (qaloop.bus.kafka.admin.Offsets.lag)
on one 6-partition topic of a cluster holding 20 other topics, this build against `--base`
(another build's admin.py, e.g. a `git archive` of main), alternating, same results checked.

    eval "$(scripts/infra env)"
    PYTHONPATH=src .venv/bin/python bench/bench_lag_probe.py --base /tmp/base/src
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import time
import uuid
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def load(path: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def main() -> None:
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    from qaloop.bus.kafka.config import KafkaSettings

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", required=True, help="the other build's src directory")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--probes", type=int, default=50)
    parser.add_argument("--bootstrap", default=os.environ.get("QALOOP_KAFKA_BOOTSTRAP"))
    args = parser.parse_args()
    if not args.bootstrap:
        parser.error('run `eval "$(scripts/infra env)"` first (needs Kafka)')
    builds = {
        "base": load(Path(args.base) / "qaloop/bus/kafka/admin.py", "base_admin"),
        "this": load(ROOT / "src/qaloop/bus/kafka/admin.py", "this_admin"),
    }
    tag = uuid.uuid4().hex[:8]
    names = [f"lagprobe{tag}.q"] + [f"lagprobe{tag}.other{i}" for i in range(20)]
    admin = AdminClient({"bootstrap.servers": args.bootstrap})
    for future in admin.create_topics([NewTopic(n, 6, 1) for n in names]).values():
        future.result()
    time.sleep(2)
    try:
        producer = Producer({"bootstrap.servers": args.bootstrap})
        for i in range(600):
            producer.produce(names[0], key=str(i), value=b"x")
        producer.flush()
        settings = KafkaSettings(args.bootstrap)
        for pair in range(args.rounds):
            order = list(builds) if pair % 2 == 0 else list(reversed(builds))
            for name in order:
                offsets: Any = builds[name].Offsets(settings)
                offsets.lag(f"lagprobe{tag}.g", names[:1])  # connections made
                cpu, wall = time.process_time(), time.perf_counter()
                for _ in range(args.probes):
                    lag = offsets.lag(f"lagprobe{tag}.g", names[:1])
                cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
                offsets.close()
                print(
                    f'{{"build": "{name}", "lag": {lag[names[0]]}, '
                    f'"cpu_ms_per_probe": {cpu * 1000 / args.probes:.3f}, '
                    f'"wall_ms_per_probe": {wall * 1000 / args.probes:.2f}}}',
                    flush=True,
                )
    finally:
        for future in admin.delete_topics(names).values():
            future.result()


if __name__ == "__main__":
    main()
