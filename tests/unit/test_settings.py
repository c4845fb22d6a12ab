from pathlib import Path

import pytest

from streams.cli import main
from streams.errors import UsageError
from streams.settings import Settings, load


def test_flag_beats_environment_beats_default():
    assert load({}, {}).broker_port == Settings().broker_port
    assert load({}, {"LAM_BROKER_PORT": "19092"}).broker_port == 19092
    assert load({"broker_port": "29092"}, {"LAM_BROKER_PORT": "19092"}).broker_port == 29092


def test_types_are_parsed_and_local_bootstrap_follows_the_port():
    s = load({"home": "/tmp/x", "broker_start_timeout": "5"}, {"LAM_BROKER_PORT": "19092"})
    assert s.home == Path("/tmp/x")
    assert s.broker_start_timeout == 5.0
    assert s.bootstrap == "127.0.0.1:19092"
    assert load({"bootstrap_servers": "kafka:9092"}, {}).bootstrap == "kafka:9092"


@pytest.mark.parametrize("env", [{"LAM_BROKER_PORT": "x"}, {"LAM_BROKER_PORT": "70000"}])
def test_bad_values_name_the_field(env):
    with pytest.raises(Exception, match="broker_port"):
        load({}, env)


@pytest.mark.parametrize("env, field", [({"LAM_STATE_CACHE_MB": "0"}, "state_cache_mb"),
                                        ({"LAM_STATE_WRITE_DELAY": "-1"}, "state_write_delay")])
def test_the_state_cache_needs_memory_and_a_delay_of_zero_or_more(env, field):
    with pytest.raises(UsageError, match=field):
        load({}, env)


def test_bad_flag_value_is_a_usage_error():
    with pytest.raises(UsageError, match="LAM_BROKER_PORT"):
        load({}, {"LAM_BROKER_PORT": "nine"})


def test_cli_reports_usage_errors_in_one_line_with_exit_2(capsys):
    assert main(["no-such-command"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("lam: usage error:") and err.count("\n") == 1


@pytest.mark.parametrize(("flag", "minimum", "value"), [
    ("--item-buckets", 1, "0"), ("--item-buckets", 1, "-3"), ("--item-buckets", 1, "many"),
    ("--refit-days", 0, "-1"), ("--refit-days", 0, "2.5"),
])
def test_train_counts_must_be_integers_at_least_their_minimum(capsys, flag, minimum, value):
    assert main(["train", "--events", "x.jsonl", flag, value]) == 2
    err = capsys.readouterr().err
    assert f"{flag}: expected an integer >= {minimum}; got {value!r}" in err and err.count("\n") == 1


def test_cli_reports_a_missing_broker_in_one_line_with_exit_1(capsys):
    assert main(["smoke", "--broker-port", "1"]) == 1
    err = capsys.readouterr().err
    assert "no Kafka broker answers on 127.0.0.1:1" in err and err.count("\n") == 1
