"""BenchmarkConfig, traffic scenarios and datasets: good values, and every bad one refused by name."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

from llama_gpu.bench import Benchmark, BenchmarkConfig, ConfigurationError, DatasetError
from llama_gpu.bench.dataset import estimate_tokens, load_dataset
from llama_gpu.bench.errors import BenchError
from llama_gpu.bench.scenarios import parse_scenario

GOOD: dict[str, Any] = {"api_base": "http://127.0.0.1:5000/v1", "api_model_name": "echo"}


def test_round_trip_and_defaults() -> None:
    cfg = BenchmarkConfig.from_dict({**GOOD, "num_users": 2, "traffic_scenario": "N(100,10)/(50,5)"})
    assert cfg.num_users == [2] and cfg.traffic_scenario == ["N(100,10)/(50,5)"]
    again = BenchmarkConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg
    assert BenchmarkConfig(**GOOD).traffic_scenario == ["D(100,100)"]
    assert BenchmarkConfig(**GOOD, task="text-to-embeddings").traffic_scenario == ["E(100)"]
    assert BenchmarkConfig(**GOOD, dataset_name="mine.txt").traffic_scenario == ["dataset"]  # prompts as written
    assert BenchmarkConfig(**GOOD, api_key="lgk_abcdefghij").to_dict(redact_key=True)["api_key"] == "lgk_ab…"
    assert issubclass(ConfigurationError, BenchError) and issubclass(DatasetError, BenchError)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"api_backend": "grpc"}, "api_backend"),
        ({"api_base": "ftp://host/v1"}, "api_base"),
        ({"api_base": "localhost:5000"}, "api_base"),
        ({"api_model_name": ""}, "api_model_name"),
        ({"task": "image-to-text"}, "task"),
        ({"num_users": [0]}, "num_users"),
        ({"num_users": []}, "num_users"),
        ({"num_users": [1, "2"]}, "num_users"),
        ({"num_users": True}, "num_users"),
        ({"max_time_per_run": 0}, "max_time_per_run"),
        ({"max_time_per_run": float("inf")}, "max_time_per_run"),
        ({"max_requests_per_run": 0}, "max_requests_per_run"),
        ({"spawn_rate": -1}, "spawn_rate"),
        ({"request_rate": "fast"}, "request_rate"),
        ({"traffic_scenario": ["D(100)"]}, "traffic_scenario"),
        ({"traffic_scenario": ["D(0,10)"]}, "traffic_scenario"),
        ({"traffic_scenario": ["D(1.5,10)"]}, "traffic_scenario"),
        ({"traffic_scenario": ["N(100,10)"]}, "traffic_scenario"),
        ({"traffic_scenario": ["U(10,5)/(1,2)"]}, "traffic_scenario"),
        ({"traffic_scenario": ["Z(1,2)"]}, "traffic_scenario"),
        ({"traffic_scenario": [7]}, "traffic_scenario"),
        ({"goodput": {"speed": 5}}, "goodput"),
        ({"goodput": {"ttft": -5}}, "goodput"),
        ({"additional_sampling_params": {"stream": False}}, "additional_sampling_params"),
        ({"server_info": []}, "server_info"),
        ({"seed": "x"}, "seed"),
        ({"experiment_name": "../up"}, "experiment_name"),
        ({"bogus": 1}, "bogus"),
    ],
)
def test_bad_settings_name_the_field(change: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        BenchmarkConfig.from_dict({**GOOD, **change})
    assert caught.value.field == field and str(caught.value).startswith(f"{field}:")


def test_scenarios_sample_within_their_bounds() -> None:
    rng = random.Random(0)
    assert parse_scenario(" d( 20 , 8 ) ").sample(rng) == (20, 8)
    uniform = parse_scenario("U(10,20)/(3,4)")
    draws = [uniform.sample(rng) for _ in range(200)]
    assert {i for i, _ in draws} == set(range(10, 21)) and {o for _, o in draws} == {3, 4}
    normal = [parse_scenario("N(100,10)/(50,5)").sample(random.Random(s)) for s in range(300)]
    mean_in = sum(i for i, _ in normal) / len(normal)
    assert 97 < mean_in < 103 and all(i >= 1 and o >= 1 for i, o in normal)
    assert parse_scenario("E(64)").sample(rng) == (64, None)


def test_the_shipped_sonnets_build_prompts_of_the_requested_size() -> None:
    sonnets = load_dataset(None)
    assert sonnets.name == "sonnets" and len(sonnets.prompts) > 300  # a few dozen sonnets, 14 lines each
    assert "Shall I compare thee to a summer's day?" in sonnets.prompts
    rng = random.Random(1)
    for target in (5, 20, 100, 1000):
        prompt = sonnets.build(target, rng)
        assert abs(estimate_tokens(prompt) - target) <= max(2, target * 0.1), (target, prompt)


def test_own_datasets(tmp_path: Path) -> None:
    txt = tmp_path / "prompts.txt"
    txt.write_text("first prompt\n\n  second prompt  \n")
    assert load_dataset(str(txt)).prompts == ["first prompt", "second prompt"]
    jsonl = tmp_path / "prompts.jsonl"
    jsonl.write_text('{"prompt": "a"}\n\n{"prompt": "b", "other": 1}\n')
    assert load_dataset(str(jsonl)).prompts == ["a", "b"]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("missing.txt", None, "does not exist"),
        ("bad.jsonl", '{"prompt": "a"}\n{not json\n', "line 2 is not JSON"),
        ("noprompt.jsonl", '{"text": "a"}\n', 'line 1 needs a non-empty string "prompt"'),
        ("number.jsonl", '{"prompt": 5}\n', "line 1"),
        ("empty.txt", "\n\n", "has no prompt"),
        ("prompts.csv", "a,b\n", ".txt"),
        ("binary.txt", b"\xff\xfe\x00", "cannot be read"),
    ],
)
def test_bad_datasets_are_dataset_errors(tmp_path: Path, name: str, content: str | bytes | None, message: str) -> None:
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    with pytest.raises(DatasetError, match=message):
        Benchmark(BenchmarkConfig(**GOOD, dataset_name=str(path)))
