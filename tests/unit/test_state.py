import numpy as np

from streams.state import FORMAT_VERSION, REASON_RING, StateLayout, record_touchpoint, ring_names

LAYOUT = StateLayout(hidden_size=4, products=3, event_types=5, action_slots=4)
H0, P0 = np.zeros(4, np.float32), np.full(3, 0.1, np.float32)


def test_states_round_trip_through_bytes():
    states = LAYOUT.fresh(3, "v1", H0, P0)
    states["hidden"] = np.arange(12, dtype=np.float32).reshape(3, 4)
    states["last_offset"] = [5, 6, 7]
    back = LAYOUT.load(LAYOUT.dump(states), "v1", H0, P0)
    assert back.tobytes() == states.tobytes()
    assert all(len(v) == LAYOUT.dtype.itemsize for v in LAYOUT.dump(states))


def test_unknown_customers_get_the_initial_state():
    states = LAYOUT.load([None, None], "v1", H0, P0)
    assert (states["format"] == FORMAT_VERSION).all()
    assert (states["last_offset"] == -1).all()
    assert np.allclose(states["probs"], P0)


def test_another_model_versions_state_keeps_offset_and_policy_but_not_its_hidden_state():
    old = LAYOUT.fresh(1, "old-model", H0, P0)
    old["hidden"] = 9.0
    old["type_counts"] = 2.0
    old["first_time"] = 1000
    old["last_offset"] = 41
    old["cooldown"][0, 2] = 12345
    other_layout = StateLayout(hidden_size=8, products=3, event_types=5, action_slots=4).fresh(1, "v1", np.zeros(8), P0)
    other_layout["last_offset"] = 17
    states = LAYOUT.load(LAYOUT.dump(old) + StateLayout.dump(other_layout), "new-model", H0, P0)
    assert list(states["last_offset"]) == [41, 17]
    assert not states["hidden"].any() and not states["type_counts"].any()
    assert list(states["first_time"]) == [1000, 0]
    assert (states["model_version"] == b"new-model").all()
    assert states["cooldown"][0, 2] == 12345 and states["cooldown"][1, 2] == 0


def test_the_reason_ring_wraps_around():
    states = LAYOUT.fresh(1, "v1", H0, P0)
    rows = np.array([0])
    for i in range(REASON_RING + 2):
        record_touchpoint(states, rows, np.array([1000 + i]), np.array([i]), ring_names(["view"], "ring_type"),
                          ring_names(["web"], "ring_channel"),
                          np.full((1, 3), float(i), np.float32))
    assert sorted(states["ring_offset"][0]) == list(range(2, REASON_RING + 2))
    assert states["ring_type"][0][0] == b"view"


def _with_slots(slots: int, fmt: int = FORMAT_VERSION) -> np.ndarray:
    """One state of LAYOUT's sizes but `slots` action slots, every slot in use, in format `fmt`."""
    state = StateLayout(hidden_size=4, products=3, event_types=5, action_slots=slots).fresh(1, "v1", H0, P0)
    state["format"] = fmt
    state["hidden"] = 0.5
    state["last_offset"] = 99
    state["armed"] = 0
    state["cooldown"] = np.arange(1, slots + 1) * 1000
    state["bought"] = 7
    state["contact_act"][0, 0] = 2
    return state


def test_a_format_2_state_with_sixteen_action_slots_is_read_whole_into_the_policys_four():
    back = LAYOUT.load(StateLayout.dump(_with_slots(16, fmt=2)), "v1", H0, P0)
    assert back["format"][0] == FORMAT_VERSION
    assert back["last_offset"][0] == 99 and (back["hidden"] == 0.5).all()
    assert list(back["cooldown"][0]) == [1000, 2000, 3000, 4000]
    assert not back["armed"].any() and (back["bought"] == 7).all() and back["contact_act"][0, 0] == 2
    assert len(LAYOUT.dump(back)[0]) == LAYOUT.dtype.itemsize


def test_a_policy_that_gains_actions_keeps_the_old_slots_and_arms_the_new_ones():
    wider = StateLayout(hidden_size=4, products=3, event_types=5, action_slots=8)
    back = wider.load(StateLayout.dump(_with_slots(4)) + [None], "v1", H0, P0)
    assert list(back["cooldown"][0]) == [1000, 2000, 3000, 4000, 0, 0, 0, 0]
    assert list(back["armed"][0]) == [0, 0, 0, 0, 1, 1, 1, 1]
    assert back["last_offset"][0] == 99 and (back["hidden"][0] == 0.5).all()
    assert back["last_offset"][1] == -1 and back["armed"][1].all()


def test_a_state_whose_action_slots_do_not_add_up_keeps_only_its_offset():
    raw = StateLayout.dump(_with_slots(4))[0]
    back = LAYOUT.load([raw + b"\0"], "v1", H0, P0)
    assert back["last_offset"][0] == 99
    assert not back["hidden"].any() and back["armed"].all()


def test_ring_names_are_utf8_cut_to_the_width_of_their_field():
    assert ring_names(["view", "x" * 20, "é" * 9, "view"], "ring_type").tolist() == [
        b"view", b"x" * 16, "é".encode() * 8, b"view"]
    assert ring_names(["y" * 13], "ring_channel").tolist() == [b"y" * 12]
