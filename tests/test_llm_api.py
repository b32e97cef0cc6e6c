"""The API target against a fault-injecting stub server on 127.0.0.1: parsing, retries, the error after the
last retry, the resumable cache, the API key, access refusals, the dry run and a whole audit."""

import json

import numpy as np
import pytest

from miaudit.attacks.registry import create_attack
from miaudit.errors import ConfigError, SignalError
from miaudit.llm.api import APICausalLM, APIError, APITargetConfig, ResponseCache, parse_completion
from openai_stub import StubServer, stub_log_prob, stub_tokens

TEXTS = [f"Document number {i} tells a story about a cat and a dog number {i}." for i in range(8)]


@pytest.fixture()
def stub():
    with StubServer(delay=1.0) as server:
        yield server


def _target(stub, tmp_path=None, **overrides):
    params = {"endpoint": stub.url, "model": "stub", "top_k": 3, "max_retries": 3, "backoff_s": 0.0,
              "timeout_s": 0.5, **overrides}
    waits = []
    target = APICausalLM(APITargetConfig(**params), cache_dir=tmp_path, progress=False, sleep=waits.append)
    return target, waits


def _expected(text):
    tokens = stub_tokens(text)
    return np.array([stub_log_prob(t, i) for i, t in enumerate(tokens) if i > 0])


def test_parse_drops_generated_tokens_and_the_unscored_first_token(stub):
    target, _ = _target(stub)
    (sig,) = target.token_signals(TEXTS[:1])
    np.testing.assert_allclose(sig.log_prob, _expected(TEXTS[0]))
    assert sig.access == "top-k log-probs" and sig.mean_logp is None and sig.text == TEXTS[0]
    assert target.n_unscored == {1: 1}
    # repeated token strings share an id (first-occurrence means work on server tokens)
    tokens = stub_tokens(TEXTS[0])[1:]
    assert len(set(sig.token_ids.tolist())) == len(set(tokens))


def test_parse_falls_back_on_text_offsets_and_rejects_malformed_bodies():
    body = {"choices": [{"logprobs": {"tokens": ["A", " b", " c", " gen"], "token_logprobs": [None, -1.0, -2.0, -3.0],
                                      "top_logprobs": [None, {" b": -1.0}, {" c": -2.0}, {" gen": -3.0}],
                                      "text_offset": [0, 1, 3, 5]}}]}
    parsed = parse_completion(body, "A b c")
    assert parsed.tokens == ["A", " b", " c"] and parsed.unscored == 1
    np.testing.assert_array_equal(parsed.log_prob, [-1.0, -2.0])
    with pytest.raises(APIError, match="no choices"):
        parse_completion({"error": "x"}, "A")
    body["choices"][0]["logprobs"]["token_logprobs"] = [None, None, -2.0, None]
    with pytest.raises(APIError, match="no log-probability for prompt token"):
        parse_completion({**body, "usage": {"completion_tokens": 0}}, "A b c")
    with pytest.raises(APIError, match="ignored echo or logprobs"):
        parse_completion({"choices": [{"logprobs": None, "text": "x"}]}, "A")


@pytest.mark.parametrize("fault", ["429", "500", "truncated", "timeout"])
def test_each_transient_fault_is_retried(stub, fault):
    target, waits = _target(stub)
    stub.fail(fault, fault)
    (sig,) = target.token_signals(TEXTS[:1])
    np.testing.assert_allclose(sig.log_prob, _expected(TEXTS[0]))
    assert target.client.n_retries == 2 and len(waits) == 2
    if fault == "429":
        assert min(waits) >= 0.01  # Retry-After is honoured


def test_the_last_retry_fails_with_one_line_naming_the_document_and_cause(stub):
    target, _ = _target(stub, max_retries=2)
    stub.fail("500", "500", "500")
    with pytest.raises(APIError) as info:
        target.token_signals(TEXTS[:1])
    message = str(info.value)
    assert "\n" not in message and "document 0" in message and "failed 3 times" in message and "HTTP 500" in message
    assert "max_retries" in message


def test_client_errors_are_not_retried(stub):
    target, waits = _target(stub)
    stub.fail("401")
    with pytest.raises(APIError, match="HTTP 401.*api_key_env"):
        target.token_signals(TEXTS[:1])
    assert waits == [] and target.client.n_requests == 1
    bad_path, _ = _target(stub, endpoint=stub.url.removesuffix("/v1"))
    with pytest.raises(APIError, match="HTTP 404.*api.endpoint"):
        bad_path.token_signals(TEXTS[:1])


def test_an_interrupted_audit_resumes_without_requerying_finished_documents(stub, tmp_path):
    target, _ = _target(stub, tmp_path, max_retries=0, concurrency=1)
    target.shard_size = 2
    stub.fail(*([None] * 0))
    first = target.token_signals(TEXTS[:3])
    stub.fail("500")  # the fourth document fails: the audit stops
    with pytest.raises(APIError, match="document 3"):
        target.token_signals(TEXTS)
    target.close()
    asked = sum(stub.prompts.values())
    assert asked == 3
    again, _ = _target(stub, tmp_path)
    every = again.token_signals(TEXTS)
    assert sum(stub.prompts.values()) - asked == len(TEXTS) - 3  # only the missing documents were sent
    assert max(stub.prompts.values()) == 1
    for a, b in zip(first, every):
        np.testing.assert_array_equal(a.log_prob, b.log_prob)


def test_a_cache_line_cut_by_an_interruption_is_dropped(tmp_path):
    cache = ResponseCache(tmp_path / "r.jsonl")
    cache.put("a", {"x": 1})
    cache.put("b", {"x": 2})
    cache.close()
    with (tmp_path / "r.jsonl").open("ab") as f:
        f.write(b'{"key": "c", "value": {"x"')
    reopened = ResponseCache(tmp_path / "r.jsonl")
    assert len(reopened) == 2 and reopened.get("b") == {"x": 2} and "c" not in reopened
    reopened.put("c", {"x": 3})
    reopened.close()
    assert ResponseCache(tmp_path / "r.jsonl").get("c") == {"x": 3}


def test_the_api_key_comes_from_the_named_environment_variable(stub, monkeypatch):
    target, _ = _target(stub, api_key_env="MIAUDIT_TEST_KEY")
    monkeypatch.delenv("MIAUDIT_TEST_KEY", raising=False)
    with pytest.raises(ConfigError, match="MIAUDIT_TEST_KEY is not set"):
        target.token_signals(TEXTS[:1])
    monkeypatch.setenv("MIAUDIT_TEST_KEY", "sk-secret-123")
    target.token_signals(TEXTS[:1])
    assert stub.headers[-1]["Authorization"] == "Bearer sk-secret-123"
    with pytest.raises(ConfigError, match="NAME of an environment variable"):
        APITargetConfig(endpoint=stub.url, model="m", api_key_env="sk-abc def")


def test_attacks_that_need_the_whole_distribution_refuse_top_k_records(stub):
    target, _ = _target(stub)
    signals = target.token_signals(TEXTS[:2])
    assert create_attack("min_k", target_kind="llm", k=0.5).score(signals).shape == (2,)
    for name in ("min_k_pp", "norm_ac"):
        with pytest.raises(SignalError, match=f"attack '{name}' needs logits access.*top-k log-probs"):
            create_attack(name, target_kind="llm").score(signals)


def _audit_config(stub, tmp_path, attacks, **api):
    members = tmp_path / "members.txt"
    nonmembers = tmp_path / "nonmembers.txt"
    members.write_text("\n".join(f"Member text {i} about a red fox and a cat {i % 3}." for i in range(24)) + "\n")
    nonmembers.write_text("\n".join(f"Other text {i} about a blue bird and a dog {i % 5}." for i in range(24)) + "\n")
    return {"kind": "llm", "dataset": {"source": "text", "members": str(members), "nonmembers": str(nonmembers)},
            "api": {"endpoint": stub.url, "model": "stub", "top_k": 2, "backoff_s": 0.0, **api},
            "attacks": [{"name": a} for a in attacks], "cache_dir": str(tmp_path / "cache"),
            "recall": {"n_shots": 2}, "evaluation": {"n_bootstrap": 50}}


def test_attacks_that_need_logits_are_refused_before_any_request(stub, tmp_path):
    from miaudit.llm.audit import run_llm_audit

    config = _audit_config(stub, tmp_path, ["loss", "min_k_pp"])
    with pytest.raises(ConfigError, match="attack 'min_k_pp' needs logits access but an API target .* gives top-k"):
        run_llm_audit(config, tmp_path / "run", progress=False)
    assert sum(stub.prompts.values()) == 0 and not (tmp_path / "run").exists()


def test_a_whole_audit_through_the_api_keeps_the_key_out_of_the_run(stub, tmp_path, monkeypatch):
    from miaudit.llm.audit import run_llm_audit

    monkeypatch.setenv("MIAUDIT_TEST_KEY", "sk-never-written-777")
    config = _audit_config(stub, tmp_path, ["loss", "zlib", "min_k", "lowercase", "recall"],
                           api_key_env="MIAUDIT_TEST_KEY")
    metrics = run_llm_audit(config, tmp_path / "run", progress=False)
    target = metrics["target"]
    assert target["access"] == "top-k log-probs" and target["leading_unscored_tokens"] == [1]
    assert "server" in target["tokenisation"] and target["api_key"] == "from $MIAUDIT_TEST_KEY"
    assert {a["name"] for a in metrics["attacks"]} >= {"loss", "zlib", "min_k", "min_k.oracle", "lowercase", "recall"}
    assert all(a["access"] == "top-k log-probs" for a in metrics["attacks"])
    assert (tmp_path / "run" / "token_view.html").is_file()
    for path in (tmp_path / "run").rglob("*"):
        if path.is_file():
            assert b"sk-never-written-777" not in path.read_bytes(), path
    for path in (tmp_path / "cache").rglob("*.jsonl"):
        assert b"sk-never-written-777" not in path.read_bytes()
    # a second run is answered from the cache: no new request
    asked = sum(stub.prompts.values())
    again = run_llm_audit(config, tmp_path / "run2", progress=False)
    assert sum(stub.prompts.values()) == asked
    assert [a["auc"] for a in again["attacks"]] == [a["auc"] for a in metrics["attacks"]]


def test_dry_run_counts_requests_and_tokens_without_sending_any(stub, tmp_path, capsys):
    import yaml

    from miaudit.cli import main

    config = _audit_config(stub, tmp_path, ["loss", "lowercase", "recall"])
    path = tmp_path / "api.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["audit", str(path), "--dry-run"]) == 0
    plan = json.loads(capsys.readouterr().out)
    n = 48 - 2  # the ReCaLL shots leave the evaluated documents
    assert plan["documents"] == n and plan["passes"]["signals"]["to_send"] == n
    assert set(plan["passes"]) == {"signals", "lowercase", "recall prefix"} and plan["requests"] == 3 * n
    assert plan["prompt_tokens_to_send"] > 3 * n * 5
    assert sum(stub.prompts.values()) == 0
