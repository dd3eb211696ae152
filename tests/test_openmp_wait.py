"""The CLI picks how OpenMP threads wait from the machine's load when it starts (apps.cli.openmp_wait_settings)."""

from __future__ import annotations

from apps.cli import openmp_wait_settings


def test_idle_cores_get_a_short_spin_and_busy_ones_passive_waiting() -> None:
    assert openmp_wait_settings({}, load1=0.1, cpus=2) == {"GOMP_SPINCOUNT": "5000"}
    assert openmp_wait_settings({}, load1=1.0, cpus=2) == {"OMP_WAIT_POLICY": "PASSIVE"}
    assert openmp_wait_settings({}, load1=1.0, cpus=8) == {"GOMP_SPINCOUNT": "5000"}  # 7 cores still idle
    assert openmp_wait_settings({}, load1=float("inf"), cpus=2) == {"OMP_WAIT_POLICY": "PASSIVE"}  # unknown load
    assert openmp_wait_settings({}, load1=0.0, cpus=0) == {"GOMP_SPINCOUNT": "5000"}


def test_a_lagging_load_average_on_cores_idle_now_still_spins() -> None:
    # the previous run ended seconds ago: its load is still in the 1-minute average, but nothing else runs now
    assert openmp_wait_settings({}, load1=1.4, cpus=2, others_running=lambda: 0) == {"GOMP_SPINCOUNT": "5000"}
    assert openmp_wait_settings({}, load1=1.4, cpus=2, others_running=lambda: 1) == {"OMP_WAIT_POLICY": "PASSIVE"}
    assert openmp_wait_settings({}, load1=1.4, cpus=2, others_running=lambda: None) == {"OMP_WAIT_POLICY": "PASSIVE"}


def test_others_running_reads_proc_loadavg() -> None:
    from apps.cli import _others_running

    seen = _others_running(samples=2, interval_s=0.0)
    assert seen is None or seen >= 0


def test_the_instant_look_is_skipped_when_the_load_average_says_idle() -> None:
    def must_not_look() -> int | None:
        raise AssertionError("looked at /proc/loadavg although the load average already said idle")

    assert openmp_wait_settings({}, load1=0.1, cpus=2, others_running=must_not_look) == {"GOMP_SPINCOUNT": "5000"}
    assert openmp_wait_settings({"GOMP_SPINCOUNT": "0"}, load1=5.0, cpus=2, others_running=must_not_look) == {}


def test_what_the_user_set_is_left_alone() -> None:
    assert openmp_wait_settings({"OMP_WAIT_POLICY": "ACTIVE"}, load1=5.0, cpus=2) == {}
    assert openmp_wait_settings({"GOMP_SPINCOUNT": "0"}, load1=0.0, cpus=2) == {}
